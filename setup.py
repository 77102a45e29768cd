"""Build the Cython kernels; everything else is declared in pyproject.toml."""

from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

#: Compiled modules: controller kernels, and compiled hot paths of drivers and sim_hw (each
#: beside its pure-Python reference).
KERNELS = sorted(glob("controller/_*.pyx") + glob("drivers/**/_*.pyx", recursive=True)
                 + glob("sim_hw/_*.pyx"))

extensions = [
    Extension(
        path[:-4].replace("/", "."),
        [path],
        include_dirs=[np.get_include()],
        extra_compile_args=["-O3"],
    )
    for path in KERNELS
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}))
