/* EAX' (ANSI C12.22-2008 Annex I) in one call per message, over OpenSSL's AES.
 *
 * The same algorithm as amistack/crypto/eax_prime.py (the reference, which documents it and
 * which the known-answer tests pin); this file only removes the per-message Python work: a
 * C12.22 message is a handful of AES blocks under a key of its own (one meter, one key), so
 * building a `cryptography` cipher context per message cost more than the message itself.
 * Here one OpenSSL AES-128-ECB context per process is re-keyed per call (EVP_EncryptInit_ex
 * with the cipher kept: only the key schedule, AES-NI where the CPU has it) and every block
 * goes through it. The GIL is held throughout, so one context serves every thread.
 *
 * Callers (eax_prime.py) check the key and cleartext lengths and raise the typed errors; the
 * checks here only keep the C side safe on its own.
 *
 * The module also carries plain EAX (Bellare, Rogaway, Wagner; amistack/crypto/eax.py is the
 * reference) under AES-128 for EAP-PSK's protected channel (RFC 4764 §3.3): each key serves
 * one authentication, so there too the per-key Python set-up (a cipher context, a CMAC context
 * and its three OMAC prefixes) cost more than the two short messages it protects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define BLOCK 16
#define TAG_LEN 4
#define KEY_LEN 16
#define MIN_CLEARTEXT (BLOCK + 1) /* ePrint 2012/018: one block or less is attackable */
#define CTR_CHUNK 64              /* counter blocks encrypted per EVP call */

static EVP_CIPHER_CTX *ctx; /* AES-128-ECB, no padding; re-keyed per call */

static int rekey(const unsigned char *key)
{
    return EVP_EncryptInit_ex(ctx, NULL, NULL, key, NULL) == 1;
}

static int ecb(unsigned char *out, const unsigned char *in, int len)
{
    int n = 0;
    return EVP_EncryptUpdate(ctx, out, &n, in, len) == 1 && n == len;
}

/* EAX' doubling: the block as a LITTLE-endian integer times x in GF(2^128). */
static void dbl_le(unsigned char *out, const unsigned char *in)
{
    unsigned carry = in[BLOCK - 1] >> 7;
    for (int i = BLOCK - 1; i > 0; i--)
        out[i] = (unsigned char)((in[i] << 1) | (in[i - 1] >> 7));
    out[0] = (unsigned char)(in[0] << 1);
    out[0] ^= (unsigned char)(0x87 & (0u - carry)); /* no branch on key-dependent bits */
}

/* plain EAX's (CMAC's, RFC 4493 §2.3) doubling: the block as a BIG-endian integer times x */
static void dbl_be(unsigned char *out, const unsigned char *in)
{
    unsigned carry = in[0] >> 7;
    for (int i = 0; i < BLOCK - 1; i++)
        out[i] = (unsigned char)((in[i] << 1) | (in[i + 1] >> 7));
    out[BLOCK - 1] = (unsigned char)(in[BLOCK - 1] << 1);
    out[BLOCK - 1] ^= (unsigned char)(0x87 & (0u - carry));
}

struct keyed {
    unsigned char d[BLOCK], q[BLOCK];
};

/* The key schedule, then the two masks from E_K(0) by `dbl`: EAX' D and Q (dbl_le), or
 * CMAC's K1 and K2 (dbl_be) for plain EAX */
static int start_with(struct keyed *k, const unsigned char *key,
                      void (*dbl)(unsigned char *, const unsigned char *))
{
    static const unsigned char zero[BLOCK];
    unsigned char e0[BLOCK];
    if (!rekey(key) || !ecb(e0, zero, BLOCK))
        return 0;
    dbl(k->d, e0);
    dbl(k->q, k->d);
    OPENSSL_cleanse(e0, sizeof e0);
    return 1;
}

static int start(struct keyed *k, const unsigned char *key)
{
    return start_with(k, key, dbl_le);
}

/* CMAC'_X(M): CBC-MAC with IV `iv`; the last block XOR D when complete, else 10*-padded and
 * XOR Q. */
static int cmac(unsigned char *out, const struct keyed *k, const unsigned char *iv,
                const unsigned char *m, Py_ssize_t n)
{
    unsigned char state[BLOCK], block[BLOCK];
    memcpy(state, iv, BLOCK);
    Py_ssize_t full = (n > 0 && n % BLOCK == 0) ? n / BLOCK - 1 : n / BLOCK;
    for (Py_ssize_t b = 0; b < full; b++) {
        for (int i = 0; i < BLOCK; i++)
            block[i] = state[i] ^ m[b * BLOCK + i];
        if (!ecb(state, block, BLOCK))
            return 0;
    }
    Py_ssize_t rest = n - full * BLOCK;
    const unsigned char *mask = rest == BLOCK ? k->d : k->q;
    unsigned char last[BLOCK] = {0};
    memcpy(last, m + full * BLOCK, (size_t)rest);
    if (rest < BLOCK)
        last[rest] = 0x80;
    for (int i = 0; i < BLOCK; i++)
        block[i] = state[i] ^ last[i] ^ mask[i];
    return ecb(out, block, BLOCK);
}

/* CTR from `first`, incremented as a 128-bit big-endian integer (plain EAX's counter) */
static int ctr_full(unsigned char *out, const unsigned char *first, const unsigned char *in,
                    Py_ssize_t n)
{
    unsigned char counter[BLOCK], blocks[CTR_CHUNK * BLOCK], stream[CTR_CHUNK * BLOCK];
    memcpy(counter, first, BLOCK);
    Py_ssize_t done = 0;
    while (done < n) {
        Py_ssize_t left = n - done;
        int count = left >= CTR_CHUNK * BLOCK ? CTR_CHUNK : (int)((left + BLOCK - 1) / BLOCK);
        for (int b = 0; b < count; b++) {
            memcpy(blocks + b * BLOCK, counter, BLOCK);
            for (int i = BLOCK - 1; i >= 0 && ++counter[i] == 0; i--)
                ;
        }
        if (!ecb(stream, blocks, count * BLOCK))
            return 0;
        Py_ssize_t take = left < count * BLOCK ? left : count * BLOCK;
        for (Py_ssize_t i = 0; i < take; i++)
            out[done + i] = in[done + i] ^ stream[i];
        done += take;
    }
    OPENSSL_cleanse(stream, sizeof stream);
    return 1;
}

/* EAX' CTR: from N' with bits 31 and 15 cleared (bytes 12 and 14 ANDed with 0x7F) */
static int ctr(unsigned char *out, const unsigned char *n_prime, const unsigned char *in,
               Py_ssize_t n)
{
    unsigned char counter[BLOCK];
    memcpy(counter, n_prime, BLOCK);
    counter[12] &= 0x7F;
    counter[14] &= 0x7F;
    return ctr_full(out, counter, in, n);
}

static int check(const Py_buffer *key, const Py_buffer *cleartext)
{
    if (key->len != KEY_LEN) {
        PyErr_SetString(PyExc_ValueError, "EAX' (C12.22) keys are AES-128: 16 bytes");
        return 0;
    }
    if (cleartext->len < MIN_CLEARTEXT) {
        PyErr_SetString(PyExc_ValueError, "EAX' cleartext of one block or less refused");
        return 0;
    }
    return 1;
}

static PyObject *crypto_error(void)
{
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL AES failed");
    return NULL;
}

/* The plaintext of `sealed` (CTR `run` from `n_prime`) if `tag` is min_tag..max_tag bytes and
 * a prefix of `expected`, else None: nothing is decrypted under a tag that does not verify. */
static PyObject *open_if_authentic(const unsigned char *expected, const Py_buffer *tag,
                                   Py_ssize_t min_tag, Py_ssize_t max_tag,
                                   int (*run)(unsigned char *, const unsigned char *,
                                              const unsigned char *, Py_ssize_t),
                                   const unsigned char *n_prime, const Py_buffer *sealed)
{
    if (tag->len < min_tag || tag->len > max_tag
        || CRYPTO_memcmp(expected, tag->buf, (size_t)tag->len) != 0)
        return Py_NewRef(Py_None);
    PyObject *result = PyBytes_FromStringAndSize(NULL, sealed->len);
    if (result != NULL
        && !run((unsigned char *)PyBytes_AS_STRING(result), n_prime, sealed->buf, sealed->len)) {
        Py_CLEAR(result);
        crypto_error();
    }
    return result;
}

/* tag = last 4 bytes of (N' XOR CMAC'_Q(ciphertext)), or of N' for an empty ciphertext */
static int tag_of(unsigned char *tag, const struct keyed *k, const unsigned char *n_prime,
                  const unsigned char *c, Py_ssize_t n)
{
    unsigned char full[BLOCK];
    if (n == 0) {
        memcpy(full, n_prime, BLOCK);
    } else {
        if (!cmac(full, k, k->q, c, n))
            return 0;
        for (int i = 0; i < BLOCK; i++)
            full[i] ^= n_prime[i];
    }
    memcpy(tag, full + BLOCK - TAG_LEN, TAG_LEN);
    return 1;
}

PyDoc_STRVAR(encrypt_doc, "encrypt(key, cleartext, plaintext) -> (ciphertext, tag)");

static PyObject *eax_encrypt(PyObject *self, PyObject *args)
{
    Py_buffer key, clear, plain;
    PyObject *ct = NULL, *result = NULL;
    unsigned char n_prime[BLOCK], tag[TAG_LEN];
    struct keyed k;
    if (!PyArg_ParseTuple(args, "y*y*y*", &key, &clear, &plain))
        return NULL;
    if (!check(&key, &clear))
        goto done;
    ct = PyBytes_FromStringAndSize(NULL, plain.len);
    if (ct == NULL)
        goto done;
    if (!start(&k, key.buf) || !cmac(n_prime, &k, k.d, clear.buf, clear.len)
        || !ctr((unsigned char *)PyBytes_AS_STRING(ct), n_prime, plain.buf, plain.len)
        || !tag_of(tag, &k, n_prime, (unsigned char *)PyBytes_AS_STRING(ct), plain.len)) {
        crypto_error();
        goto done;
    }
    result = Py_BuildValue("(Oy#)", ct, (const char *)tag, (Py_ssize_t)TAG_LEN);
done:
    Py_XDECREF(ct);
    OPENSSL_cleanse(&k, sizeof k);
    PyBuffer_Release(&key);
    PyBuffer_Release(&clear);
    PyBuffer_Release(&plain);
    return result;
}

PyDoc_STRVAR(decrypt_doc,
             "decrypt(key, cleartext, ciphertext, tag) -> plaintext, or None if the tag does "
             "not verify (nothing is decrypted then)");

static PyObject *eax_decrypt(PyObject *self, PyObject *args)
{
    Py_buffer key, clear, sealed, tag;
    PyObject *result = NULL;
    unsigned char n_prime[BLOCK], expected[TAG_LEN];
    struct keyed k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &key, &clear, &sealed, &tag))
        return NULL;
    if (!check(&key, &clear))
        goto done;
    if (!start(&k, key.buf) || !cmac(n_prime, &k, k.d, clear.buf, clear.len)
        || !tag_of(expected, &k, n_prime, sealed.buf, sealed.len)) {
        crypto_error();
        goto done;
    }
    result = open_if_authentic(expected, &tag, TAG_LEN, TAG_LEN, ctr, n_prime, &sealed);
done:
    OPENSSL_cleanse(&k, sizeof k);
    OPENSSL_cleanse(n_prime, sizeof n_prime);
    PyBuffer_Release(&key);
    PyBuffer_Release(&clear);
    PyBuffer_Release(&sealed);
    PyBuffer_Release(&tag);
    return result;
}

PyDoc_STRVAR(authenticate_doc,
             "authenticate(key, cleartext, plaintext) -> the 4-byte tag over cleartext || "
             "plaintext (cleartext-authentication mode)");

static PyObject *eax_authenticate(PyObject *self, PyObject *args)
{
    Py_buffer key, clear, plain;
    PyObject *result = NULL;
    unsigned char *joined = NULL, mac[BLOCK];
    struct keyed k;
    if (!PyArg_ParseTuple(args, "y*y*y*", &key, &clear, &plain))
        return NULL;
    if (!check(&key, &clear))
        goto done;
    joined = PyMem_Malloc((size_t)(clear.len + plain.len));
    if (joined == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(joined, clear.buf, (size_t)clear.len);
    memcpy(joined + clear.len, plain.buf, (size_t)plain.len);
    if (!start(&k, key.buf) || !cmac(mac, &k, k.d, joined, clear.len + plain.len)) {
        crypto_error();
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)mac + BLOCK - TAG_LEN, TAG_LEN);
done:
    PyMem_Free(joined);
    OPENSSL_cleanse(&k, sizeof k);
    PyBuffer_Release(&key);
    PyBuffer_Release(&clear);
    PyBuffer_Release(&plain);
    return result;
}

/* -- plain EAX: CMAC (RFC 4493: big-endian doubling), OMAC^t, CTR over the whole block ----- */

/* OMAC^t(M) = CMAC([t]_16 || M). The prefix block is always complete: with M empty it is the
 * last block (XOR K1); else CMAC goes on over M from E([t]_16) as its chaining value, which is
 * `cmac` above with that IV (K1, K2 in the places of EAX' D, Q). */
static int omac(unsigned char *out, const struct keyed *k, unsigned char t,
                const unsigned char *m, Py_ssize_t n)
{
    unsigned char block[BLOCK] = {0}, iv[BLOCK];
    block[BLOCK - 1] = t;
    if (n == 0) {
        for (int i = 0; i < BLOCK; i++)
            block[i] ^= k->d[i];
        return ecb(out, block, BLOCK);
    }
    return ecb(iv, block, BLOCK) && cmac(out, k, iv, m, n);
}

/* N' and the full 16-byte tag N' ^ H' ^ C' of `c` under header `h` */
static int eax_tag(unsigned char *n_prime, unsigned char *tag, const struct keyed *k,
                   const Py_buffer *nonce, const Py_buffer *header, const unsigned char *c,
                   Py_ssize_t n)
{
    unsigned char h_prime[BLOCK], c_prime[BLOCK];
    if (!omac(n_prime, k, 0, nonce->buf, nonce->len)
        || !omac(h_prime, k, 1, header->buf, header->len) || !omac(c_prime, k, 2, c, n))
        return 0;
    for (int i = 0; i < BLOCK; i++)
        tag[i] = n_prime[i] ^ h_prime[i] ^ c_prime[i];
    return 1;
}

PyDoc_STRVAR(eax_seal_doc,
             "eax_encrypt(key, nonce, header, plaintext) -> (ciphertext, 16-byte tag): plain "
             "EAX under AES-128");

static PyObject *eax_seal(PyObject *self, PyObject *args)
{
    Py_buffer key, nonce, header, plain;
    PyObject *ct = NULL, *result = NULL;
    unsigned char n_prime[BLOCK], tag[BLOCK];
    struct keyed k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &key, &nonce, &header, &plain))
        return NULL;
    if (key.len != KEY_LEN) {
        PyErr_SetString(PyExc_ValueError, "this EAX takes AES-128 keys: 16 bytes");
        goto done;
    }
    ct = PyBytes_FromStringAndSize(NULL, plain.len);
    if (ct == NULL)
        goto done;
    if (!start_with(&k, key.buf, dbl_be) || !omac(n_prime, &k, 0, nonce.buf, nonce.len)
        || !ctr_full((unsigned char *)PyBytes_AS_STRING(ct), n_prime, plain.buf, plain.len)
        || !eax_tag(n_prime, tag, &k, &nonce, &header, (unsigned char *)PyBytes_AS_STRING(ct),
                    plain.len)) {
        crypto_error();
        goto done;
    }
    result = Py_BuildValue("(Oy#)", ct, (const char *)tag, (Py_ssize_t)BLOCK);
done:
    Py_XDECREF(ct);
    OPENSSL_cleanse(&k, sizeof k);
    PyBuffer_Release(&key);
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&header);
    PyBuffer_Release(&plain);
    return result;
}

PyDoc_STRVAR(eax_open_doc,
             "eax_decrypt(key, nonce, header, ciphertext, tag) -> plaintext, or None if the tag "
             "(1-16 bytes: a prefix of EAX's) does not verify (nothing is decrypted then)");

static PyObject *eax_open(PyObject *self, PyObject *args)
{
    Py_buffer key, nonce, header, sealed, tag;
    PyObject *result = NULL;
    unsigned char n_prime[BLOCK], expected[BLOCK];
    struct keyed k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*", &key, &nonce, &header, &sealed, &tag))
        return NULL;
    if (key.len != KEY_LEN) {
        PyErr_SetString(PyExc_ValueError, "this EAX takes AES-128 keys: 16 bytes");
        goto done;
    }
    if (!start_with(&k, key.buf, dbl_be)
        || !eax_tag(n_prime, expected, &k, &nonce, &header, sealed.buf, sealed.len)) {
        crypto_error();
        goto done;
    }
    result = open_if_authentic(expected, &tag, 1, BLOCK, ctr_full, n_prime, &sealed);
done:
    OPENSSL_cleanse(&k, sizeof k);
    OPENSSL_cleanse(n_prime, sizeof n_prime);
    PyBuffer_Release(&key);
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&header);
    PyBuffer_Release(&sealed);
    PyBuffer_Release(&tag);
    return result;
}

/* -- C12.22 messages in the layout every endpoint sends, in one call (amistack/c1222) ------
 *
 * c1222.acse.encode_header + c1222.security.seal, and c1222.acse._decode_common, are the
 * references: these produce and accept byte for byte the same (tests/unit/c1222/
 * test_native_codec.py compares them on arbitrary inputs). The layout (C12.22 §5.3.2.4):
 *
 *   60 L  a2 <called title>  [a4 <called invocation id>]  a6 <calling title>
 *         [a7 <calling AE qualifier>]  a8 <calling invocation id>
 *         ac 0f a2 0d a0 0b a1 09 80 01 <key id> 81 04 <iv>
 *         be L 28 L 81 L <epsem control> <epsem body> <MAC>
 *
 * and the EAX' cleartext (C12.22 Annex I, as security.py builds it): the called title in
 * absolute form, the invocation ids and qualifier elements, the authentication value, the
 * user-information header up to the EPSEM control byte, the absolute calling title, key id, IV.
 * The title elements (as sent and as the cleartext has them) come from the caller, built once
 * per title. */

#define TAG_APDU 0x60
#define TAG_CALLED 0xA2
#define TAG_CALLED_INV 0xA4
#define TAG_CALLING 0xA6
#define TAG_QUALIFIER 0xA7
#define TAG_CALLING_INV 0xA8
#define TAG_USER_INFO 0xBE
#define TAG_EXTERNAL 0x28
#define TAG_OCTET_ALIGNED 0x81
#define TAG_INTEGER 0x02
#define IV_LEN 4
#define MAX_SEAL_LEN 0xFFFFFF /* BER lengths of up to 3 octets here; longer: the Python path */

/* calling-authentication-value up to the key id: ac 0f a2 0d a0 0b a1 09 80 01 */
static const unsigned char auth_head[] = {0xAC, 0x0F, 0xA2, 0x0D, 0xA0, 0x0B,
                                          0xA1, 0x09, 0x80, 0x01};
#define AUTH_LEN (sizeof auth_head + 1 + 2 + IV_LEN) /* + key id, 81 04, iv */

/* X.690 §8.1.3 definite length, fewest octets; returns the octets written */
static Py_ssize_t put_len(unsigned char *out, Py_ssize_t n)
{
    if (n < 0x80) {
        out[0] = (unsigned char)n;
        return 1;
    }
    int k = n > 0xFFFF ? 3 : n > 0xFF ? 2 : 1;
    out[0] = (unsigned char)(0x80 | k);
    for (int i = 0; i < k; i++)
        out[1 + i] = (unsigned char)(n >> (8 * (k - 1 - i)));
    return 1 + k;
}

static Py_ssize_t len_len(Py_ssize_t n)
{
    return n < 0x80 ? 1 : n > 0xFFFF ? 4 : n > 0xFF ? 3 : 2;
}

/* `tag` { 02 n <minimal non-negative INTEGER> } (X.690 §8.3); the octets written */
static Py_ssize_t put_int(unsigned char *out, unsigned char tag, unsigned long long v)
{
    int bits = 0;
    for (unsigned long long x = v; x; x >>= 1)
        bits++;
    int n = bits / 8 + 1; /* a leading 00 when the top bit would be set */
    out[0] = tag;
    out[1] = (unsigned char)(n + 2);
    out[2] = TAG_INTEGER;
    out[3] = (unsigned char)n;
    for (int i = 0; i < n; i++)
        out[4 + i] = (unsigned char)(i < n - 8 ? 0 : v >> (8 * (n - 1 - i)));
    return 4 + n;
}

/* an optional INTEGER argument: None -> 0 (absent), else 1 with *v; -1 (error set) when it
 * is not an int of 0..2^64-1 */
static int opt_uint(PyObject *o, unsigned long long *v)
{
    if (o == Py_None)
        return 0;
    *v = PyLong_AsUnsignedLongLong(o);
    if (*v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    return 1;
}

PyDoc_STRVAR(c1222_seal_doc,
             "c1222_seal(key, called_wire, called_clear, calling_wire, calling_clear, "
             "calling_invocation_id, called_invocation_id | None, calling_ae_qualifier | None, "
             "control, key_id, iv, body, encrypt) -> the whole APDU, the EPSEM body encrypted "
             "(encrypt true) or only authenticated, with its 4-byte MAC; None when a number "
             "or the size is beyond this path (ids of more than 64 bits, an EPSEM of 16 MiB)");

static PyObject *c1222_seal(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[8]; /* key, called_wire, called_clear, calling_wire, calling_clear, iv, body */
    int got = 0;
    PyObject *result = NULL;
    unsigned char *clear = NULL, *out;
    struct keyed k;
    unsigned long long inv = 0, called_inv = 0, qualifier = 0;
    int has_called_inv = 0, has_qualifier = 0;
    unsigned char mac[BLOCK], n_prime[BLOCK], tag[TAG_LEN];
    static const int buffer_args[] = {0, 1, 2, 3, 4, 10, 11};
    memset(&k, 0, sizeof k);
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "c1222_seal takes 13 arguments");
        return NULL;
    }
    for (; got < 7; got++)
        if (PyObject_GetBuffer(args[buffer_args[got]], &b[got], PyBUF_SIMPLE) < 0)
            goto done;
    Py_buffer *key = &b[0], *called_wire = &b[1], *called_clear = &b[2], *calling_wire = &b[3],
              *calling_clear = &b[4], *iv = &b[5], *body = &b[6];
    long control = PyLong_AsLong(args[8]), key_id = PyLong_AsLong(args[9]);
    int encrypt = PyObject_IsTrue(args[12]);
    if (PyErr_Occurred() || encrypt < 0)
        goto done;
    if (key->len != KEY_LEN || iv->len != IV_LEN || control < 0 || control > 0xFF
        || key_id < 0 || key_id > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "c1222_seal: a 16-byte key, one-byte key id and "
                                          "control, a 4-byte IV");
        goto done;
    }
    inv = PyLong_AsUnsignedLongLong(args[5]);
    if ((inv == (unsigned long long)-1 && PyErr_Occurred())
        || (has_called_inv = opt_uint(args[6], &called_inv)) < 0
        || (has_qualifier = opt_uint(args[7], &qualifier)) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            goto done;
        PyErr_Clear(); /* negative or above 64 bits: the reference decides */
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t n = 1 + body->len + TAG_LEN; /* EPSEM octets as carried */
    if (n > MAX_SEAL_LEN - 64 - called_wire->len - calling_wire->len) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* the variable middle: invocation ids, qualifier, auth value, user-information header */
    unsigned char mid[3 * 13 + AUTH_LEN + 12], *p = mid;
    unsigned char *called_inv_at = p;
    if (has_called_inv)
        p += put_int(p, TAG_CALLED_INV, called_inv);
    Py_ssize_t called_inv_len = p - called_inv_at;
    unsigned char *rest = p; /* qualifier onwards */
    if (has_qualifier)
        p += put_int(p, TAG_QUALIFIER, qualifier);
    p += put_int(p, TAG_CALLING_INV, inv);
    memcpy(p, auth_head, sizeof auth_head);
    p += sizeof auth_head;
    *p++ = (unsigned char)key_id;
    *p++ = 0x81;
    *p++ = IV_LEN;
    memcpy(p, iv->buf, IV_LEN);
    p += IV_LEN;
    Py_ssize_t inner = 1 + len_len(n) + n, outer = 1 + len_len(inner) + inner;
    *p++ = TAG_USER_INFO;
    p += put_len(p, outer);
    *p++ = TAG_EXTERNAL;
    p += put_len(p, inner);
    *p++ = TAG_OCTET_ALIGNED;
    p += put_len(p, n);
    *p++ = (unsigned char)control;
    Py_ssize_t rest_len = p - rest;
    /* the APDU: 60 L called [called inv] calling <rest> body MAC */
    Py_ssize_t content = called_wire->len + called_inv_len + calling_wire->len + rest_len
                         + body->len + TAG_LEN;
    result = PyBytes_FromStringAndSize(NULL, 1 + len_len(content) + content);
    if (result == NULL)
        goto done;
    out = (unsigned char *)PyBytes_AS_STRING(result);
    *out++ = TAG_APDU;
    out += put_len(out, content);
    memcpy(out, called_wire->buf, (size_t)called_wire->len);
    out += called_wire->len;
    memcpy(out, called_inv_at, (size_t)called_inv_len);
    out += called_inv_len;
    memcpy(out, calling_wire->buf, (size_t)calling_wire->len);
    out += calling_wire->len;
    memcpy(out, rest, (size_t)rest_len);
    out += rest_len;
    /* the EAX' cleartext: called (absolute), <middle>, calling (absolute), key id, iv */
    Py_ssize_t clear_len = called_clear->len + (p - mid) + calling_clear->len + 1 + IV_LEN;
    clear = PyMem_Malloc((size_t)(clear_len + (encrypt ? 0 : body->len)));
    if (clear == NULL) {
        PyErr_NoMemory();
        Py_CLEAR(result);
        goto done;
    }
    unsigned char *c = clear;
    memcpy(c, called_clear->buf, (size_t)called_clear->len);
    c += called_clear->len;
    memcpy(c, mid, (size_t)(p - mid));
    c += p - mid;
    memcpy(c, calling_clear->buf, (size_t)calling_clear->len);
    c += calling_clear->len;
    *c++ = (unsigned char)key_id;
    memcpy(c, iv->buf, IV_LEN);
    if (!start(&k, key->buf))
        goto crypto_failed;
    if (encrypt) {
        if (!cmac(n_prime, &k, k.d, clear, clear_len) || !ctr(out, n_prime, body->buf, body->len)
            || !tag_of(tag, &k, n_prime, out, body->len))
            goto crypto_failed;
    } else {
        memcpy(clear + clear_len, body->buf, (size_t)body->len);
        memcpy(out, body->buf, (size_t)body->len);
        if (!cmac(mac, &k, k.d, clear, clear_len + body->len))
            goto crypto_failed;
        memcpy(tag, mac + BLOCK - TAG_LEN, TAG_LEN);
    }
    memcpy(out + body->len, tag, TAG_LEN);
    goto done;
crypto_failed:
    Py_CLEAR(result);
    crypto_error();
done:
    if (clear != NULL)
        PyMem_Free(clear);
    OPENSSL_cleanse(&k, sizeof k);
    OPENSSL_cleanse(n_prime, sizeof n_prime);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    return result;
}

/* The INTEGER element `tag` at data[pos] as _decode_common takes it (short form, minimal,
 * 1..8 content octets here: 9 are left to the Python path); its end, or 0 when not. */
static Py_ssize_t int_at(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end,
                         unsigned long long *v)
{
    if (pos + 4 > end)
        return 0;
    Py_ssize_t n = d[pos + 3], ve = pos + 4 + n;
    if (d[pos + 1] != n + 2 || d[pos + 2] != TAG_INTEGER || n < 1 || n > 8 || ve > end
        || d[pos + 4] & 0x80 || (n > 1 && d[pos + 4] == 0 && !(d[pos + 5] & 0x80)))
        return 0;
    *v = 0;
    for (Py_ssize_t i = pos + 4; i < ve; i++)
        *v = (*v << 8) | d[i];
    return ve;
}

PyDoc_STRVAR(c1222_parse_doc,
             "c1222_parse(apdu) -> (called title CHOICE, called invocation id | None, calling "
             "title CHOICE, calling AE qualifier | None, calling invocation id, key id, iv, "
             "cleartext middle, cleartext tail, EPSEM offset) for the layout every endpoint "
             "sends, else None (then the general decoder decides). The EAX' cleartext is the "
             "called title's absolute element + middle + the calling title's + tail.");

static PyObject *c1222_parse(PyObject *self, PyObject *arg)
{
    Py_buffer buf;
    PyObject *result = Py_None;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = buf.buf;
    Py_ssize_t end = buf.len, pos, called_end, calling_at, calling_end;
    Py_ssize_t called_inv_at, called_inv_end, qual_at, qual_end, inv_at;
    unsigned long long called_inv = 0, qualifier = 0, inv = 0;
    if (end < 4 || end >= 0x82 || d[0] != TAG_APDU || d[1] != end - 2 || d[2] != TAG_CALLED
        || d[3] >= 0x80)
        goto done;
    called_end = 4 + d[3];
    if (called_end > end)
        goto done;
    pos = called_inv_at = called_end;
    if (pos < end && d[pos] == TAG_CALLED_INV && !(pos = int_at(d, pos, end, &called_inv)))
        goto done;
    called_inv_end = pos;
    if (pos + 2 > end || d[pos] != TAG_CALLING || d[pos + 1] >= 0x80)
        goto done;
    calling_at = pos + 2;
    calling_end = calling_at + d[pos + 1];
    if (calling_end > end)
        goto done;
    pos = qual_at = calling_end;
    if (pos < end && d[pos] == TAG_QUALIFIER && !(pos = int_at(d, pos, end, &qualifier)))
        goto done;
    qual_end = pos;
    inv_at = pos;
    if (pos >= end || d[pos] != TAG_CALLING_INV || !(pos = int_at(d, pos, end, &inv)))
        goto done;
    Py_ssize_t auth_end = pos + (Py_ssize_t)AUTH_LEN;
    if (auth_end + 7 > end || memcmp(d + pos, auth_head, sizeof auth_head) != 0
        || d[pos + sizeof auth_head + 1] != 0x81 || d[pos + sizeof auth_head + 2] != IV_LEN)
        goto done;
    unsigned char key_id = d[pos + sizeof auth_head];
    pos = auth_end;
    Py_ssize_t n = d[pos + 5];
    if (d[pos] != TAG_USER_INFO || d[pos + 2] != TAG_EXTERNAL || d[pos + 4] != TAG_OCTET_ALIGNED
        || n < 1 || n >= 0x80 || d[pos + 3] != n + 2 || d[pos + 1] != n + 4 || pos + 6 + n != end)
        goto done;
    /* middle: [called inv] [qualifier] calling inv, auth value, ui header + control byte */
    unsigned char middle[0x80], tail[1 + IV_LEN];
    Py_ssize_t m = 0;
    memcpy(middle, d + called_inv_at, (size_t)(called_inv_end - called_inv_at));
    m += called_inv_end - called_inv_at;
    memcpy(middle + m, d + qual_at, (size_t)(qual_end - qual_at));
    m += qual_end - qual_at;
    memcpy(middle + m, d + inv_at, (size_t)(auth_end + 7 - inv_at));
    m += auth_end + 7 - inv_at;
    tail[0] = key_id;
    memcpy(tail + 1, d + auth_end - IV_LEN, IV_LEN);
    PyObject *called_obj = called_inv_end > called_inv_at
                               ? PyLong_FromUnsignedLongLong(called_inv)
                               : Py_NewRef(Py_None);
    PyObject *qual_obj = qual_end > qual_at ? PyLong_FromUnsignedLongLong(qualifier)
                                            : Py_NewRef(Py_None);
    if (called_obj == NULL || qual_obj == NULL) {
        Py_XDECREF(called_obj);
        Py_XDECREF(qual_obj);
        result = NULL;
        goto done;
    }
    result = Py_BuildValue("(y#Ny#NKiy#y#y#n)", (const char *)d + 4, called_end - 4, called_obj,
                           (const char *)d + calling_at, calling_end - calling_at, qual_obj, inv,
                           (int)key_id, (const char *)tail + 1, (Py_ssize_t)IV_LEN,
                           (const char *)middle, m, (const char *)tail, (Py_ssize_t)sizeof tail,
                           pos + 6);
    PyBuffer_Release(&buf);
    return result;
done:
    PyBuffer_Release(&buf);
    return Py_NewRef(result);
}

PyDoc_STRVAR(c1222_open_doc,
             "c1222_open(key, cleartext, user_information, encrypted) -> the EPSEM body (after "
             "its control byte) when the 4-byte MAC at the end of the user-information verifies "
             "under `key` (decrypted if `encrypted`), else None (nothing is decrypted then)");

static PyObject *c1222_open(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer key, clear, ui;
    PyObject *result = NULL;
    unsigned char n_prime[BLOCK], expected[TAG_LEN], mac[BLOCK], *joined = NULL;
    struct keyed k;
    int encrypted;
    memset(&k, 0, sizeof k);
    memset(n_prime, 0, sizeof n_prime);
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "c1222_open takes 4 arguments");
        return NULL;
    }
    if ((encrypted = PyObject_IsTrue(args[3])) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &key, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &clear, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &ui, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&clear);
        return NULL;
    }
    if (!check(&key, &clear))
        goto done;
    if (ui.len < 1 + TAG_LEN) {
        PyErr_SetString(PyExc_ValueError, "c1222_open: user-information shorter than its MAC");
        goto done;
    }
    const unsigned char *sealed = (const unsigned char *)ui.buf + 1;
    Py_ssize_t n = ui.len - 1 - TAG_LEN;
    const unsigned char *tag = sealed + n;
    if (!start(&k, key.buf))
        goto crypto_failed;
    if (encrypted) {
        if (!cmac(n_prime, &k, k.d, clear.buf, clear.len) || !tag_of(expected, &k, n_prime, sealed, n))
            goto crypto_failed;
        if (CRYPTO_memcmp(expected, tag, TAG_LEN) != 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result != NULL && !ctr((unsigned char *)PyBytes_AS_STRING(result), n_prime, sealed, n)) {
            Py_CLEAR(result);
            goto crypto_failed;
        }
        goto done;
    }
    joined = PyMem_Malloc((size_t)(clear.len + n));
    if (joined == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(joined, clear.buf, (size_t)clear.len);
    memcpy(joined + clear.len, sealed, (size_t)n);
    if (!cmac(mac, &k, k.d, joined, clear.len + n))
        goto crypto_failed;
    if (CRYPTO_memcmp(mac + BLOCK - TAG_LEN, tag, TAG_LEN) != 0)
        result = Py_NewRef(Py_None);
    else
        result = PyBytes_FromStringAndSize((const char *)sealed, n);
    goto done;
crypto_failed:
    crypto_error();
done:
    PyMem_Free(joined);
    OPENSSL_cleanse(&k, sizeof k);
    OPENSSL_cleanse(n_prime, sizeof n_prime);
    PyBuffer_Release(&key);
    PyBuffer_Release(&clear);
    PyBuffer_Release(&ui);
    return result;
}

static PyMethodDef methods[] = {
    {"encrypt", eax_encrypt, METH_VARARGS, encrypt_doc},
    {"decrypt", eax_decrypt, METH_VARARGS, decrypt_doc},
    {"authenticate", eax_authenticate, METH_VARARGS, authenticate_doc},
    {"eax_encrypt", eax_seal, METH_VARARGS, eax_seal_doc},
    {"eax_decrypt", eax_open, METH_VARARGS, eax_open_doc},
    {"c1222_seal", (PyCFunction)(void (*)(void))c1222_seal, METH_FASTCALL, c1222_seal_doc},
    {"c1222_parse", c1222_parse, METH_O, c1222_parse_doc},
    {"c1222_open", (PyCFunction)(void (*)(void))c1222_open, METH_FASTCALL, c1222_open_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_eax_prime",
    "EAX' (ANSI C12.22 Annex I) and EAX over OpenSSL AES-128, one call per message.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__eax_prime(void)
{
    static const unsigned char zero_key[KEY_LEN];
    if (ctx == NULL) {
        ctx = EVP_CIPHER_CTX_new();
        if (ctx == NULL || EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, zero_key, NULL) != 1
            || EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL AES-128-ECB unavailable");
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
