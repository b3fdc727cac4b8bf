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

static PyMethodDef methods[] = {
    {"encrypt", eax_encrypt, METH_VARARGS, encrypt_doc},
    {"decrypt", eax_decrypt, METH_VARARGS, decrypt_doc},
    {"authenticate", eax_authenticate, METH_VARARGS, authenticate_doc},
    {"eax_encrypt", eax_seal, METH_VARARGS, eax_seal_doc},
    {"eax_decrypt", eax_open, METH_VARARGS, eax_open_doc},
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
