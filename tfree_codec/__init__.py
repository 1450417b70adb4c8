# This is the public API of tfree_codec: text -> words -> trigram activation patterns, and back.
# Importing it never imports torch; the model, training and generation live in submodules that do.
from .codec import Codec as Codec
from .codec import Encoded as Encoded
from .config import CodecConfig as CodecConfig
from .config import TfreeError as TfreeError
from .words import EOT as EOT
from .words import MARKERS as MARKERS
from .words import join as join
from .words import split as split

__version__ = "0.1.0"
__all__ = ["Codec", "CodecConfig", "EOT", "Encoded", "MARKERS", "TfreeError", "join", "split", "__version__"]
