"""Build the Cython fast path; everything else is declared in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mep.dataplane._fastpath",
        ["mep/dataplane/_fastpath.pyx"],
        # reasons.h: verdict and reason numbers are defined once, in the BPF tree.
        include_dirs=["mep/dataplane/ebpf"],
        depends=["mep/dataplane/ebpf/reasons.h"],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
