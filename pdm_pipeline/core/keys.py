"""The release signing key: Ed25519, created on first use under the data root, never leaves the training host.

    <data root>/keys/signing_key.pem   private key (mode 0600): signs every model directory, release and bundle
    <data root>/keys/public_key.pem    public key: copy it to the Raspberry Pi (`predict --public-key`)

`PDM_SIGNING_KEY` points at another private key file (e.g. one kept in a secret store); its public key is
derived from it. A key that cannot be read is an error, never a silent unsigned release.
"""

from __future__ import annotations

import os
from pathlib import Path

from pdm_pipeline.edge.integrity import IntegrityError, Trust

SIGNING_KEY_ENV = "PDM_SIGNING_KEY"
PRIVATE_KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "public_key.pem"


def keys_dir(root: Path) -> Path:
    return Path(root) / "keys"


def private_key_path(root: Path) -> Path:
    override = os.environ.get(SIGNING_KEY_ENV)
    return Path(override) if override else keys_dir(root) / PRIVATE_KEY_FILE


def public_key_path(root: Path) -> Path:
    return keys_dir(root) / PUBLIC_KEY_FILE


def _public_pem(private_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_key(root: Path) -> bytes:
    """The private key (PEM); created with its public key when neither exists yet (never overwritten)."""
    path = private_key_path(Path(root))
    if path.is_file():
        pem = path.read_bytes()
    elif os.environ.get(SIGNING_KEY_ENV):
        raise IntegrityError(f"{SIGNING_KEY_ENV}={path} does not exist: cannot sign releases")
    elif public_key_path(Path(root)).is_file():
        raise IntegrityError(
            f"the signing key {path} is missing but its public key {public_key_path(Path(root))} exists (the releases "
            "and the Pis trust it): restore the key, or move public_key.pem aside to start a new key on purpose")
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: theirs wins
        except FileExistsError:
            pem = path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
    public = public_key_path(Path(root))
    try:
        expected = _public_pem(pem)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"the signing key {path} is not a readable PEM private key ({exc})") from None
    if not public.is_file() or public.read_bytes() != expected:
        public.parent.mkdir(parents=True, exist_ok=True)
        tmp = public.with_name(f".{public.name}.{os.getpid()}")
        tmp.write_bytes(expected)
        os.replace(tmp, public)
    return pem


def local_trust(root: Path) -> Trust:
    """Trust for loading on the training host: this data root's public key (created with the key if needed)."""
    return Trust(_public_pem(signing_key(root)))
