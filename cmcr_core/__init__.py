"""cmcr: pretrain 3D LiDAR encoders by distilling 2D image models, then measure what they learned.

`cmcr_core.api` holds the entry points the command line and notebooks call.
"""

__version__ = "0.2.0"
