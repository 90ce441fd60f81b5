"""pytest plugin (registered through the ``pytest11`` entry point); filled in by the suite."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
