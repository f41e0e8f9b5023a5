"""CMCR: contrastive distillation + unified codebook + geometry-enhanced reconstruction (docs/cmcr.md).

Wiring of one step (docs/cmcr.md, "One step"), every loss on when its weight is > 0::

    h  = trunk(voxels);  F = l2n(final(h));  G = final_class_level(h)          (V, 64) each, G raw
    E  = frozen encoder(images);  Fi = decoder(E) (unit);  Gi = decoder2(E) (raw)   (I, 64, H, W)
    L_nce    = PointInfoNCE over sample 1 of M pairs
    L_orth   = ‖Fᵀ l2n(G)‖_F / 64²
    P, Vf    = F, Fi at sample 2 (independent by default)   kP, kV = nearest codes on the step's codebook
    L_commit_P, L_commit_V, L_cmcm from P, Vf and the codebook
    L_mim    = mse(MIMDecoder(Gi + STE(q(Fi))), unmasked image)   (all crops, or ``mim_images`` drawn ones)
    L_occ, L_int over (query, neighbour) pairs: MLP([Z[voxel(j)], x_q − p_j]) with Z = G + STE(q(F))
    EMA update of the codebook from (P, Vf, kP, kV), averaged over ranks, then renormalised

The codebook is snapshotted at the start of the step: every assignment, quantisation and the CMCM soft
assignments use that snapshot, so the in-place EMA update cannot disturb autograd and the looked-up
codewords are the pre-update ones ([assumed]). The gradient flow is the table of docs/cmcr.md (tested in
tests/methods/cmcr/test_gradient_flow.py). Modules of losses that are off are not built, so every parameter of
the method receives a gradient and DDP needs no ``find_unused_parameters`` (D12, docs/differences.md).

Cost (docs/cmcr.md "Cost"): the pixels' codes come from the decoder's low-resolution map
(``UnifiedCodebook.nearest_upsampled``: scores are linear, so they are upsampled instead of the features),
the fused MIM input is built channels-last (the layout the MIM decoder's convolutions run in), and the
occupancy MLP's first layer runs once per voxel (``OccupancyMLP.forward_factored``). ``mim_images`` > 0
is a cost knob, off in the published recipe: the MIM loss of that many crops drawn at random per step,
an unbiased estimate of the all-crop mean (every crop has the same size).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.data.batch import Batch
from cmcr_core.data.occupancy import QUERY_INTENSITY, QUERY_OCCUPANCY
from cmcr_core.losses.code_matching import code_matching_loss
from cmcr_core.losses.codebook import UnifiedCodebook
from cmcr_core.losses.commitment import commitment_losses
from cmcr_core.losses.occupancy import occupancy_losses
from cmcr_core.losses.orthogonality import orthogonality_loss
from cmcr_core.losses.point_info_nce import info_nce, sample_pairs
from cmcr_core.methods.base import DistillationMethod
from cmcr_core.models.cmcr_heads import MIMDecoder, OccupancyMLP
from cmcr_core.models.frozen_teacher import FrozenTeacher
from cmcr_core.models.image_decoders import PixelDecoder
from cmcr_core.models.minkunet import MinkUNet34C
from cmcr_core.ops.geometry import radius_neighbours
from cmcr_core.ops.pixels import gather_pixel_features
from cmcr_core.sparse import SparseConv3d, SparseTensor

__all__ = ["CMCR", "OCCUPANCY_EXTRAS"]

logger = logging.getLogger(__name__)

# Batch.extras key written by cmcr_core.data.occupancy.OccupancyQueries.
OCCUPANCY_EXTRAS = "occupancy_queries"


class CMCR(DistillationMethod):
    """The CMCR pretraining method.

    Args:
        student: MinkUNet34C; its ``final`` head gives F (normalised here), its trunk ``out_b`` feeds the
            second head ``final_class_level`` (96 -> 64, bias, raw) that gives G.
        teacher: frozen image encoder.
        decoder: F²ᴰ decoder (unit-norm output, ``ppkt`` preset).
        codebook: the unified codebook (dimension = embedding size).
        specific_decoder: G²ᴰ decoder (``cmcr_specific`` preset); required when ``mim_weight`` > 0.
        mim_decoder: ``MIMDecoder``; required when ``mim_weight`` > 0.
        occupancy_mlp: ``OccupancyMLP``; required when an occupancy or intensity weight is > 0.
        point_nce_weight ... intensity_weight: loss weights (0 = off); the published values are 1 except
            ``orthogonality_weight`` = 0.1.
        num_matches: M, pairs of each sample (2048 in CMCR).
        temperature: τ of PointInfoNCE.
        commitment_beta: β of the commitment losses.
        code_matching_temperature: τ of the CMCM soft assignments (1 in the reference).
        mim_images: 0 (published): MIM over every crop of the step; k > 0: over k crops drawn uniformly
            without replacement each step (own generator, checkpointed), all crops when fewer exist.
        occupancy_radius, occupancy_max_neighbours: neighbour search of the occupancy queries.
        shared_codebook_pairs: reuse the NCE pair sample for the codebook (reference: independent).
        contrast_images: crops whose teacher features feed PointInfoNCE and the codebook pairs when MIM
            masks the images: "masked" (reference: the masked network input) or "unmasked" (the MIM
            target crops; the masked crops then only feed MIM, at the cost of a second teacher pass).
        orthogonality_per_voxel: divide L_orth's cross-correlation by the voxel count V and drop the
            1/(D_F D_G) (reference: ‖Fᵀ Ĝ‖_F / D², a sum over voxels that grows with the batch).
        mim_point_codes: add to the MIM decoder's input, at every pixel of a point-pixel pair, the
            STE-quantised F³ᴰ of its point (the mean over the pixel's points), so that MIM's gradient
            reaches the 3D network (reference: MIM sees only 2D features; off).
        seed: seed of the pair generators (``generators()``).
    """

    def __init__(
        self,
        student: MinkUNet34C,
        teacher: FrozenTeacher,
        decoder: PixelDecoder,
        codebook: UnifiedCodebook,
        specific_decoder: PixelDecoder | None = None,
        mim_decoder: MIMDecoder | None = None,
        occupancy_mlp: OccupancyMLP | None = None,
        point_nce_weight: float = 1.0,
        orthogonality_weight: float = 0.1,
        commitment_weight: float = 1.0,
        code_matching_weight: float = 1.0,
        mim_weight: float = 1.0,
        occupancy_weight: float = 1.0,
        intensity_weight: float = 1.0,
        num_matches: int = 2048,
        temperature: float = 0.07,
        commitment_beta: float = 0.25,
        code_matching_temperature: float = 1.0,
        mim_images: int = 0,
        occupancy_radius: float = 1.0,
        occupancy_max_neighbours: int = 32,
        shared_codebook_pairs: bool = False,
        contrast_images: str = "masked",
        orthogonality_per_voxel: bool = False,
        mim_point_codes: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.weights = {
            "point_nce": point_nce_weight, "orthogonality": orthogonality_weight,
            "commitment": commitment_weight, "cmcm": code_matching_weight, "mim": mim_weight,
            "occupancy": occupancy_weight, "intensity": intensity_weight,
        }
        negative = {name: w for name, w in self.weights.items() if w < 0}
        if negative:
            raise ValueError(f"CMCR loss weights must be >= 0, got {negative}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("every CMCR loss weight is 0: set at least one loss weight > 0")
        if mim_images < 0:
            raise ValueError(f"loss.mim_images must be >= 0 (0 = every crop), got {mim_images}")
        if contrast_images not in ("masked", "unmasked"):
            raise ValueError(f"loss.contrast_images must be 'masked' or 'unmasked', got {contrast_images!r}")
        if num_matches < 1 or temperature <= 0:
            raise ValueError(f"need num_matches >= 1 and temperature > 0, got {num_matches}, {temperature}")
        needs = {"specific_decoder": (mim_weight > 0, specific_decoder),
                 "mim_decoder": (mim_weight > 0, mim_decoder),
                 "occupancy_mlp": (occupancy_weight > 0 or intensity_weight > 0, occupancy_mlp)}
        missing = [name for name, (needed, module) in needs.items() if needed and module is None]
        if missing:
            raise ValueError(f"CMCR needs {missing} for the losses whose weights are > 0")
        dim = codebook.dim
        if student.final.out_channels != dim:
            raise ValueError(f"student.out_channels ({student.final.out_channels}) must equal the codebook "
                             f"dimension ({dim})")
        self.student = student
        self.teacher = teacher
        self.decoder = decoder
        self.codebook = codebook
        # Modules of losses that are off are dropped: an unused parameter would stall DDP.
        mim_on, occupancy_on = mim_weight > 0, occupancy_weight > 0 or intensity_weight > 0
        self.specific_decoder = specific_decoder if mim_on else None
        self.mim_decoder = mim_decoder if mim_on else None
        self.occupancy_mlp = occupancy_mlp if occupancy_on else None
        uses_specific_3d = orthogonality_weight > 0 or occupancy_on
        # G³ᴰ head, raw: built only when a loss reads it.
        self.final_class_level = None
        if uses_specific_3d:
            self.final_class_level = SparseConv3d(student.feature_channels, dim, kernel_size=1, bias=True)
        self.num_matches = num_matches
        self.temperature = temperature
        self.commitment_beta = commitment_beta
        self.code_matching_temperature = code_matching_temperature
        self.mim_images = mim_images
        self.occupancy_radius = occupancy_radius
        self.occupancy_max_neighbours = occupancy_max_neighbours
        self.shared_codebook_pairs = shared_codebook_pairs
        self.contrast_images = contrast_images
        self.orthogonality_per_voxel = orthogonality_per_voxel
        self.mim_point_codes = mim_point_codes
        self.seed_generators(seed, "pair_generator", "codebook_pair_generator", "mim_image_generator")

    def generators(self) -> dict[str, torch.Generator]:
        """Named random generators to checkpoint with the run (exact resume); ``mim_images`` only when
        that knob draws crops (checkpoints of the published setting keep their three names)."""
        named = {"pairs": self.pair_generator, "codebook_pairs": self.codebook_pair_generator,
                 "codebook_reset": self.codebook.generator}
        if self.mim_images > 0 and self.mim_decoder is not None:
            named["mim_images"] = self.mim_image_generator
        return named

    @property
    def uses_codebook_pairs(self) -> bool:
        """Whether the step draws the codebook's pair sample (it feeds the EMA update)."""
        w = self.weights
        return any(w[name] > 0 for name in ("commitment", "cmcm", "mim", "occupancy", "intensity"))

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        w = self.weights
        trunk = self.student.forward_features(SparseTensor(batch.feats, batch.coords))
        shared = F.normalize(self.student.final(trunk).features, dim=1, eps=1e-12)  # F³ᴰ
        specific = None if self.final_class_level is None else self.final_class_level(trunk).features  # G³ᴰ
        images = batch.images.float().div_(255.0)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        # With unmasked contrast targets the teacher sees the unmasked crops for PointInfoNCE and the
        # codebook, and the masked crops only where MIM needs them.
        separate = self.contrast_images == "unmasked" and batch.target_images is not None
        contrast = batch.target_images.float().div_(255.0) if separate else images
        encoded = self.teacher(contrast)
        pixels = self.decoder(encoded, output_size=size)  # F²ᴰ of the contrast crops
        table = self.codebook.embedding.clone()  # the step's starting codebook (see the module docstring)
        num_pairs, device = batch.pairing_points.shape[0], shared.device
        if num_pairs == 0:
            raise ValueError(f"batch {batch.tokens} has no point-pixel pairs")
        losses: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        mim_on, occupancy_on = w["mim"] > 0, w["occupancy"] > 0 or w["intensity"] > 0
        # Every pixel of the MIM crops is assigned once per step; the pair sample reuses those codes when
        # they are the same crops' features.
        mim_images, mim_encoded, mim_pixels, pixel_codes_map = None, None, None, None
        if mim_on:
            mim_images = self._draw_mim_images(pixels.shape[0], device)  # None = every crop
            chosen = slice(None) if mim_images is None else mim_images
            if separate:
                mim_encoded = self.teacher(images[chosen])
                mim_pixels = self.decoder(mim_encoded, output_size=size)
            else:
                mim_encoded, mim_pixels = encoded[chosen], pixels[chosen]
            pixel_codes_map = self._pixel_codes(mim_encoded, size, table)  # (I or k, H, W)

        first = None
        if w["point_nce"] > 0 or self.shared_codebook_pairs:
            first = sample_pairs(num_pairs, self.num_matches, device, self.pair_generator)
        if w["point_nce"] > 0:
            anchors = shared[batch.pairing_points[first]]
            candidates = gather_pixel_features(pixels, batch.pairing_images[first])
            losses["point_nce"] = w["point_nce"] * info_nce(anchors, candidates, self.temperature)
        if w["orthogonality"] > 0:
            losses["orthogonality"] = w["orthogonality"] * orthogonality_loss(
                shared, specific, per_voxel=self.orthogonality_per_voxel)

        update = None
        if self.uses_codebook_pairs:
            second = first if first is not None and self.shared_codebook_pairs else sample_pairs(
                num_pairs, self.num_matches, device, self.codebook_pair_generator)
            point_vectors = shared[batch.pairing_points[second]]  # P
            pixel_vectors = gather_pixel_features(pixels, batch.pairing_images[second])  # Vf
            point_codes = self.codebook.nearest(point_vectors, table)
            pixel_codes = self._pair_pixel_codes(pixel_vectors, batch.pairing_images[second], table,
                                                 None if separate else pixel_codes_map, mim_images,
                                                 pixels.shape[0])
            if w["commitment"] > 0:
                commit_p, commit_v = commitment_losses(point_vectors, pixel_vectors, table[point_codes],
                                                       table[pixel_codes], self.commitment_beta)
                losses["commit_points"] = w["commitment"] * commit_p
                losses["commit_pixels"] = w["commitment"] * commit_v
            if w["cmcm"] > 0:
                losses["cmcm"] = w["cmcm"] * code_matching_loss(point_vectors, pixel_vectors, table,
                                                               self.code_matching_temperature)
            perplexity, active = self.codebook.usage(torch.cat([point_codes, pixel_codes]))
            metrics["codebook_perplexity"], metrics["codebook_active"] = perplexity, active
            update = (point_vectors.detach(), pixel_vectors.detach(), point_codes, pixel_codes)

        if mim_on:
            target = batch.images if batch.target_images is None else batch.target_images
            if mim_images is not None:
                target = target[mim_images]
            points = self._mim_point_codes(batch, shared, table, mim_images, pixels.shape[0], size) \
                if self.mim_point_codes else None
            losses["mim"] = w["mim"] * self._mim_loss(mim_encoded, mim_pixels, target, table, pixel_codes_map,
                                                      size, points)
        if occupancy_on:
            loss_occ, loss_int, accuracy = self._occupancy_losses(batch, shared, specific, table)
            metrics["occupancy_accuracy"] = accuracy
            if w["occupancy"] > 0:
                losses["occupancy"] = w["occupancy"] * loss_occ
            if w["intensity"] > 0:
                losses["intensity"] = w["intensity"] * loss_int

        if update is not None and self.training:
            self.codebook.update(*update)
        return losses, metrics

    def _draw_mim_images(self, num_images: int, device: torch.device) -> Tensor | None:
        """Sorted indices of the crops whose MIM loss is computed this step; None = every crop."""
        if self.mim_images == 0 or self.mim_images >= num_images:
            return None
        drawn = torch.randperm(num_images, generator=self.mim_image_generator, device=device)
        return drawn[: self.mim_images].sort().values

    def _pixel_codes(self, encoded: Tensor, size: tuple[int, int], table: Tensor) -> Tensor:
        """Nearest codes of F²ᴰ = l2n(bilinear(conv(E))) at every pixel, from the low-resolution map.

        The 1×1 convolution is re-run without autograd on the small encoder map (a negligible cost);
        searching its bilinear upsampling equals searching the normalised pixels (see
        ``UnifiedCodebook.nearest_upsampled``).
        """
        decoder = self.decoder
        if not isinstance(decoder, PixelDecoder):
            raise TypeError(f"CMCR's decoder must be a PixelDecoder, got {type(decoder).__name__}")
        with torch.no_grad():
            low = decoder.conv(encoded)
        return self.codebook.nearest_upsampled(low, size, decoder.align_corners, table)

    def _pair_pixel_codes(self, vectors: Tensor, where: Tensor, table: Tensor, codes_map: Tensor | None,
                          mim_images: Tensor | None, num_images: int) -> Tensor:
        """Codes of the pair sample's pixels: looked up in the MIM code map where it covers their crop,
        searched directly otherwise (crops left out by ``mim_images``, or MIM off).

        Args:
            vectors: (M, D) pixel features of the pairs.
            where: (M, 3) int64 (image, row, column) of the pairs.
            table: the step's codebook.
            codes_map: (k, H, W) codes of the crops ``mim_images`` (of every crop when that is None).
            mim_images: (k,) sorted crop indices, or None.
            num_images: crops in the batch.
        """
        if codes_map is None:
            return self.codebook.nearest(vectors, table)
        image, row, col = where.unbind(1)
        if mim_images is None:
            return codes_map[image, row, col]
        slot = torch.full((num_images,), -1, dtype=torch.int64, device=where.device)
        slot[mim_images] = torch.arange(len(mim_images), device=where.device)
        pair_slot = slot[image]
        looked_up = codes_map[pair_slot.clamp_min(0), row, col]
        return torch.where(pair_slot >= 0, looked_up, self.codebook.nearest(vectors, table))

    def _mim_loss(self, encoded: Tensor, pixels: Tensor, target: Tensor, table: Tensor, codes: Tensor,
                  size: tuple[int, int], point_codes: Tensor | None = None) -> Tensor:
        """mse(MIMDecoder(G²ᴰ + STE(q(F²ᴰ)) [+ point codes]), unmasked image) over every pixel and channel
        of the MIM crops.

        Args:
            encoded: (k, C, h, w) teacher map of the (masked) MIM crops; pixels: their (k, D, H, W) F²ᴰ.
            target: (k, 3, H, W) uint8 unmasked crops; codes: (k, H, W) nearest codes of ``pixels``.
            point_codes: optional (k, H, W, D) map added to the decoder's input (``_mim_point_codes``).

        The specific decoder runs on a channels-last encoder map, so G²ᴰ, the fused input and the MIM
        decoder's convolutions share one layout (no full-resolution layout copy).
        """
        specific = self.specific_decoder(encoded.contiguous(memory_format=torch.channels_last),
                                         output_size=size)
        fused = self.codebook.quantize_map(pixels, table, base=specific, codes=codes)
        if point_codes is not None:
            fused = fused + point_codes.permute(0, 3, 1, 2)  # channels-last, like ``fused``
        reconstruction = self.mim_decoder(fused)
        with torch.autocast(device_type=reconstruction.device.type, enabled=False):
            return F.mse_loss(reconstruction.float(), target.float().div_(255.0))

    def _mim_point_codes(self, batch: Batch, shared: Tensor, table: Tensor, mim_images: Tensor | None,
                         num_images: int, size: tuple[int, int]) -> Tensor:
        """(k, H, W, D): at each pixel of the MIM crops, the mean of STE(q(F³ᴰ)) over the points paired
        with it (0 where none is); the gradient reaches F³ᴰ through the straight-through estimator."""
        height, width = size
        image, row, col = batch.pairing_images.unbind(1)
        slot = torch.arange(num_images, device=image.device)
        if mim_images is not None:
            slot = torch.full((num_images,), -1, dtype=torch.int64, device=image.device)
            slot[mim_images] = torch.arange(len(mim_images), device=image.device)
        crops = num_images if mim_images is None else len(mim_images)
        pair_slot = slot[image]
        keep = pair_slot >= 0
        where = (pair_slot[keep] * height + row[keep]) * width + col[keep]
        codes = self.codebook.quantize(shared[batch.pairing_points[keep]], table)  # (n, D), STE
        summed = codes.new_zeros(crops * height * width, codes.shape[1]).index_add_(0, where, codes)
        counts = torch.bincount(where, minlength=crops * height * width).clamp_min_(1).to(codes.dtype)
        return (summed / counts.unsqueeze(1)).view(crops, height, width, codes.shape[1])

    def _occupancy_losses(
        self, batch: Batch, shared: Tensor, specific: Tensor, table: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """L_occ, L_int over (query, neighbour point) pairs, features Z = G³ᴰ + STE(q(F³ᴰ)) per voxel, and
        the fraction of pairs whose occupancy logit has the right sign (a metric).

        Only the voxels of some pair are assigned, quantised and projected by the MLP's first layer (the
        others do not reach the losses).
        """
        if OCCUPANCY_EXTRAS not in batch.extras:
            raise ValueError(
                "the occupancy/intensity losses need occupancy queries in the batch: build the dataset with "
                "extras_hook=cmcr_core.data.occupancy.OccupancyQueries() (cmcr_core.runs.pretrain does this)"
            )
        queries = batch.extras[OCCUPANCY_EXTRAS]
        query_index, point_index = radius_neighbours(
            queries[:, :3], batch.points[:, :3], self.occupancy_radius, self.occupancy_max_neighbours,
            batch.extras[f"{OCCUPANCY_EXTRAS}_batch"], batch.point_batch,
        )
        used, pair_voxel = torch.unique(batch.point_to_voxel[point_index], return_inverse=True)
        fused = self.codebook.quantize(shared[used], table, base=specific[used])  # Z of the used voxels
        offsets = (queries[query_index, :3] - batch.points[point_index, :3]).to(fused.dtype)
        # = MLP(cat([Z[voxel(j)], offset])): the first layer's feature part runs once per voxel.
        outputs = self.occupancy_mlp.forward_factored(fused, pair_voxel, offsets)
        occupied = queries[query_index, QUERY_OCCUPANCY]
        loss_occ, loss_int = occupancy_losses(outputs, occupied, queries[query_index, QUERY_INTENSITY])
        with torch.no_grad():  # how often the logit's sign is right (the BCE alone hides it near ln 2)
            right = ((outputs[:, 0] > 0) == (occupied > 0.5)).float().sum()
            accuracy = right / max(occupied.shape[0], 1)
        return loss_occ, loss_int, accuracy
