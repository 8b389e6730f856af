"""No model hub is ever reached: every model deftrec loads is local. Imports nothing heavy (the CLI calls it first)."""

from __future__ import annotations

import os
import sys


def hub_offline() -> None:
    """Set HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE, and huggingface_hub's copy of them if it is already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # huggingface_hub reads the variable once, when it is first imported
        constants.HF_HUB_OFFLINE = True
