"""The workflows: pretrain, finetune/probe, ReCon objects, teacher training, zero-shot, analysis, the toy
experiment and data preparation, each on the one run setup of `cmcr_core.engine.runner`; `run_folder` names
the files a run folder holds."""
