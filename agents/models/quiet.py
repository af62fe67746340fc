"""Keep model libraries quiet: their progress bars and advisory logs are not flotilla's output.

transformers draws "Loading weights" bars, sentence-transformers and huggingface_hub log
advisories; flotilla shows its own progress where loading is slow (runtime/console.py). Call
`quiet_model_libraries()` where such a library is first loaded; the CLI also sets the
environment switches before anything imports tqdm (`QUIET_ENV`), which covers bars drawn
with plain tqdm (the GGUF conversion's) that have no library switch.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["QUIET_ENV", "quiet_model_libraries"]

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TQDM_DISABLE": "1",  # read by tqdm when it is imported: only effective set early (the CLI does)
}
_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub", "accelerate")
_done = False
_lock = threading.Lock()


def quiet_model_libraries() -> None:
    """Progress bars off and warnings-level logs muted for the HF stack; idempotent and cheap after the first call."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        for name, value in QUIET_ENV.items():
            if name != "TQDM_DISABLE":  # process-wide for every tqdm user: only the CLI decides that
                os.environ.setdefault(name, value)
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:  # called where transformers is about to load anyway
            from transformers.utils import logging as transformers_logging
        except ImportError:
            pass
        else:
            transformers_logging.disable_progress_bar()
            transformers_logging.set_verbosity_error()
        try:
            from huggingface_hub.utils import disable_progress_bars
        except ImportError:
            pass
        else:
            disable_progress_bars()
        _done = True
