# The optional C extension of amistack.crypto.eax_prime (_eax_prime.c, built by setup.py).
def encrypt(key: bytes, cleartext: bytes, plaintext: bytes, /) -> tuple[bytes, bytes]: ...
def decrypt(key: bytes, cleartext: bytes, ciphertext: bytes, tag: bytes, /) -> bytes | None: ...
def authenticate(key: bytes, cleartext: bytes, plaintext: bytes, /) -> bytes: ...

# plain EAX under AES-128 (amistack.crypto.eax.NativeEax): the full 16-byte tag; a shorter tag
# given to eax_decrypt is checked as a prefix of it
def eax_encrypt(
    key: bytes, nonce: bytes, header: bytes, plaintext: bytes, /
) -> tuple[bytes, bytes]: ...
def eax_decrypt(
    key: bytes, nonce: bytes, header: bytes, ciphertext: bytes, tag: bytes, /
) -> bytes | None: ...

# C12.22's common message layout (amistack.c1222.acse._decode_common_py and
# amistack.c1222.security.seal's encode_header path are the references)
def c1222_seal(
    key: bytes,
    called_wire: bytes,
    called_clear: bytes,
    calling_wire: bytes,
    calling_clear: bytes,
    calling_invocation_id: int,
    called_invocation_id: int | None,
    calling_ae_qualifier: int | None,
    control: int,
    key_id: int,
    iv: bytes,
    body: bytes,
    encrypt: bool,
    /,
) -> bytes | None: ...
def c1222_parse(
    apdu: bytes, /
) -> tuple[bytes, int | None, bytes, int | None, int, int, bytes, bytes, bytes, int] | None: ...
def c1222_open(
    key: bytes, cleartext: bytes, user_information: bytes, encrypted: bool, /
) -> bytes | None: ...
