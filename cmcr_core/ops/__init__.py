"""Low-level operations used by many packages and importing none of them: point geometry (FPS, kNN,
radius neighbours), pixel gathering and superpixel ids, atomic file writes, size options."""
