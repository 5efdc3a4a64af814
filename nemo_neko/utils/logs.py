"""Log set-up for the command-line tools: our INFO lines, the libraries' noise filtered."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Our INFO logs on the terminal; Megatron-Core and PyTorch only from WARNING, and their
    known-harmless warnings (missing Transformer Engine / apex on CPU, deprecations inside
    Megatron and PyTorch's checkpoint code) filtered out."""
    import logging
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("megatron", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")
    warnings.filterwarnings("ignore", message=".*full scope is deprecated.*")
    warnings.filterwarnings(
        "ignore", category=FutureWarning, module="torch.distributed.checkpoint.*"
    )
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron.*")
