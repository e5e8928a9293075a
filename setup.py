"""Build script: the pure-Python package plus, when a CUDA toolkit is present, the `videomae._C` extension.

`kernels/` (Triton) installs as `videomae.kernels`: the top-level name `kernels` belongs to another project.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["videomae", "videomae.*"]) + ["videomae.kernels"]

setup(
    packages=packages,
    package_dir={"videomae.kernels": "kernels"},
)
