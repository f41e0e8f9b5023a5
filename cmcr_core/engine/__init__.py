"""Training engine: the loop, checkpoints, schedules, torchrun/DDP helpers and metrics logging.

The engine knows only ``Method`` (``cmcr_core.engine.method``) and batches (anything with ``.to``); it
imports no data reader and no model.
"""

from cmcr_core.engine.checkpoint import CHECKPOINT_NAME, TrainPosition, load_checkpoint
from cmcr_core.engine.distributed import DistContext, ShardedSampler, init_distributed, single_process_context
from cmcr_core.engine.loop import NonFiniteLossError, TrainResult, TrainSettings, train
from cmcr_core.engine.method import Method, trainable_state_dict
from cmcr_core.engine.schedules import OptimizerSettings, ScheduleSettings, build_optimizer, lr_factors

__all__ = [
    "CHECKPOINT_NAME",
    "DistContext",
    "Method",
    "NonFiniteLossError",
    "OptimizerSettings",
    "ScheduleSettings",
    "ShardedSampler",
    "TrainPosition",
    "TrainResult",
    "TrainSettings",
    "build_optimizer",
    "init_distributed",
    "load_checkpoint",
    "lr_factors",
    "single_process_context",
    "train",
    "trainable_state_dict",
]
