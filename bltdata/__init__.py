"""bltdata: byte data preprocessing and patching for Byte Latent Transformers.

The library holds every algorithm; `bltdata.pipelines` (Apache Beam) and `bltdata.cli`
(click) are thin layers over it. Importing this package is cheap: torch, apache_beam and
numba are imported only by the modules that need them.
"""

__version__ = "0.1.0"
