"""Integrity of model directories and bundles: a sha256 manifest, signed with Ed25519, checked before loading.

Every directory that holds a model (a staged model, a released model, an edge bundle) carries

    manifest.json   {"files": {relative path: {"sha256", "bytes"}}, "n_files", "total_bytes", ...}
    manifest.sig    base64 Ed25519 signature of manifest.json's exact bytes

`verify_dir` refuses, naming the file: a missing or unlisted file, a changed byte, a manifest path that is
absolute, contains '..', or resolves outside the directory (also through a symlink), an unsigned manifest, and
a signature that does not verify with the trusted public key. Only after that is anything read from the
directory, so a planted or edited file never reaches a model loader.

The private key signs on the training host (`core/keys.py`); a Raspberry Pi holds only the public key. Signing
uses the `cryptography` package; nothing here needs Dagster, AutoGluon or MLflow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdm_pipeline.errors import PdmError

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
_OWN_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})


class IntegrityError(PdmError):
    """A model directory or bundle whose files do not match its signed manifest; the message names the file."""


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _listed_files(directory: Path) -> list[str]:
    """Relative POSIX paths of every file and symlink under `directory`, except the manifest and signature."""
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(directory).as_posix()
        if rel not in _OWN_FILES:
            out.append(rel)
    return out


@dataclass(frozen=True)
class Trust:
    """What a loader accepts: manifests signed by `public_key` (PEM bytes), or unsigned ones when allowed."""

    public_key: bytes | None = None
    allow_unsigned: bool = False

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, allow_unsigned: bool = False) -> Trust:
        file = Path(path)
        if not file.is_file():
            raise IntegrityError(f"public key {file} does not exist")
        return cls(file.read_bytes(), allow_unsigned)

    def verify(self, message: bytes, signature: bytes | None, where: str,
               files: tuple[str, str] = (MANIFEST_FILE, SIGNATURE_FILE)) -> str:
        """'signed' after a good signature, 'unsigned (allowed)' when allowed; raises otherwise. `files`: the
        signed file and its signature's file, for the messages."""
        signed, signature_file = files
        if signature is None:
            if self.allow_unsigned:
                return "unsigned (allowed)"
            raise IntegrityError(f"{where}: {signature_file} is missing: {signed} is not signed (refused)")
        if self.public_key is None:
            if self.allow_unsigned:
                return "signature not checked (no public key, unsigned allowed)"
            raise IntegrityError(f"{where}: no trusted public key to check the signature with (refused)")
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(self.public_key)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"{where}: the trusted public key is not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise IntegrityError(f"{where}: the trusted public key is not an Ed25519 key")
        try:
            key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError):
            raise IntegrityError(
                f"{where}: the signature of {signed} does not verify with the trusted public key "
                f"(signed by another key, or {signed} was edited or damaged): refused"
            ) from None
        return "signed"


def sign_bytes(private_key_pem: bytes, message: bytes) -> bytes:
    """base64 Ed25519 signature of `message`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError("the signing key is not an Ed25519 private key")
    return base64.b64encode(key.sign(message))


def write_manifest(directory: Path, private_key_pem: bytes | None, extra: dict[str, Any] | None = None) -> dict:
    """Hash every file of `directory` into manifest.json and sign it (manifest.sig) when a key is given.

    Symlinks are refused: a directory that is signed holds real files only.
    """
    directory = Path(directory)
    files = {}
    for rel in _listed_files(directory):
        path = directory / rel
        if path.is_symlink():
            raise IntegrityError(f"{directory}: {rel} is a symlink; a signed directory holds regular files only")
        files[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    manifest = {
        **(extra or {}),
        "n_files": len(files),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "files": files,
    }
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    # Unlink first: the files may be hard links shared with another copy of the directory.
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    (directory / MANIFEST_FILE).write_bytes(data)
    signature = directory / SIGNATURE_FILE
    signature.unlink(missing_ok=True)
    if private_key_pem is not None:
        signature.write_bytes(sign_bytes(private_key_pem, data))
    return manifest


def _confined(directory: Path, rel: str, where: str) -> Path:
    """The path of a manifest entry, refused when it could point outside `directory`."""
    if not rel or rel.startswith(("/", "\\")) or ".." in Path(rel).parts or ":" in Path(rel).parts[0]:
        raise IntegrityError(f"{where}: manifest path {rel!r} is not a plain relative path inside the directory")
    path = directory / rel
    real_root = directory.resolve()
    try:
        path.resolve().relative_to(real_root)
    except ValueError:
        raise IntegrityError(f"{where}: manifest path {rel!r} resolves outside the directory") from None
    return path


def verify_dir(directory: Path, trust: Trust, what: str = "") -> dict[str, Any]:
    """Check the signed manifest of `directory` and every file against it; returns the manifest.

    Raises IntegrityError naming the directory and the first offending file.
    """
    directory = Path(directory)
    where = f"{what} {directory}".strip()
    manifest_file = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise IntegrityError(f"{where}: no such directory" if not directory.exists() else f"{where}: not a directory")
    if not manifest_file.is_file():
        raise IntegrityError(f"{where}: {MANIFEST_FILE} is missing (not a signed model directory, or it was altered)")
    data = manifest_file.read_bytes()
    signature_file = directory / SIGNATURE_FILE
    signature = signature_file.read_bytes() if signature_file.is_file() else None
    status = trust.verify(data, signature, where)
    try:
        manifest = json.loads(data)
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError("files is not an object")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{where}: {MANIFEST_FILE} is not a valid manifest ({exc})") from None
    for rel, entry in listed.items():
        path = _confined(directory, rel, where)
        if path.is_symlink():
            raise IntegrityError(f"{where}: {rel} is a symlink (refused)")
        if not path.is_file():
            raise IntegrityError(f"{where}: {rel} is listed in {MANIFEST_FILE} but missing")
        if path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
            raise IntegrityError(f"{where}: {rel} does not match its sha256 in {MANIFEST_FILE} (changed)")
    unlisted = [rel for rel in _listed_files(directory) if rel not in listed]
    if unlisted:
        raise IntegrityError(f"{where}: {unlisted[0]} is not listed in {MANIFEST_FILE} (unexpected file, refused)")
    manifest["_verification"] = status
    return manifest


def resolve_inside(directory: Path, rel: str, what: str = "") -> Path:
    """A path named by a (verified) card or manifest, refused when it is not inside `directory`."""
    return _confined(Path(directory), rel, f"{what} {directory}".strip())
