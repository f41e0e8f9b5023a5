"""`python -m cmcr_cli ...` (what `torchrun -m cmcr_cli pretrain ...` runs)."""

from cmcr_cli.app import main

if __name__ == "__main__":
    main()
