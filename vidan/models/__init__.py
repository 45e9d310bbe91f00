"""Model loaders. Every model comes from a local file or an installed package: nothing
is downloaded at run time.

Hugging Face libraries read their offline switches once, when first imported, so they
are set here, before any loader can import them (a user's explicit setting wins).
Loaders also pass local paths with ``local_files_only=True``, which holds even when
something imported huggingface_hub earlier.
"""

import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
