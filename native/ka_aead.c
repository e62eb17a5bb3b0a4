// The pair link's sealed records (src/pair/records.ts): AES-256-GCM, one call per record sealed. It uses
// the OpenSSL that Node itself carries (Node exports its symbols to addons, and ships its headers),
// so there is nothing to link and the same library TLS uses. JavaScript's node:crypto costs one
// object and four calls into C++ per record, several microseconds for a small one: a link's
// ping-pong paid more in crypto calls than it saved by leaving TLS.
//
//   new Aead(key, seal)                a direction's key (32 bytes); seal: true to seal, false to open
//   aead.seal(nonce, pieces, out, offset) -> number
//                                      writes one whole record into out at offset: [length u32 BE]
//                                      [ciphertext][tag 16], the length (of the pieces together,
//                                      1 to 16 MiB) authenticated as additional data; returns its
//                                      size (the caller's buffer: records.ts reuses its memory)
//   aead.begin(nonce, header)          opening a record, in steps as its ciphertext arrives (a
//   aead.update(piece, out, offset)    read's buffer is reused for the next read): begin with its
//   aead.final(tag) -> boolean         header, update deciphers each piece into out at offset,
//                                      final says whether the tag verifies (false: what update
//                                      wrote is not to be used); update past the record's length,
//                                      or final before all of it, throws
//
// The key schedule is computed once per Aead; each record sets only its nonce (12 bytes, the
// caller's: records.ts makes them unique). Bad arguments throw TypeError{code: KA_NATIVE_ARG};
// OpenSSL failing throws Error{code: KA_NATIVE_CRYPTO}. Nothing is kept between calls but the key
// and, while opening, how much of the record is still to come.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include <openssl/evp.h>

#include "ka_native.h"

#define AEAD_KEY_BYTES 32
#define AEAD_NONCE_BYTES 12
#define AEAD_TAG_BYTES 16
#define AEAD_HEADER_BYTES 4
// Far above records.ts MAX_RECORD; a bound so that lengths never overflow.
#define AEAD_MAX_RECORD (16u << 20)
// Pieces of one record: a turn of the event loop's frames (records.ts seals at 1 MiB).
#define AEAD_MAX_PIECES 4096

typedef struct {
  EVP_CIPHER_CTX* ctx;
  bool seal;
  /** Opening: begin came, final not yet; `left` ciphertext bytes of the record still to come. */
  bool opening;
  size_t left;
} aead_t;

static napi_value throw_arg(napi_env env, const char* message) {
  napi_throw_type_error(env, "KA_NATIVE_ARG", message);
  return NULL;
}

static napi_value throw_crypto(napi_env env, const char* what) {
  napi_throw_error(env, "KA_NATIVE_CRYPTO", what);
  return NULL;
}

static void aead_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  aead_t* aead = data;
  EVP_CIPHER_CTX_free(aead->ctx);
  free(aead);
}

// A Buffer argument of exactly `want` bytes (want 0: any length); 0 with an error thrown.
static int get_bytes(napi_env env, napi_value value, size_t want, const uint8_t** data, size_t* length, const char* what) {
  bool is_buffer = false;
  void* p = NULL;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, value, &p, length) != napi_ok ||
      (want != 0 && *length != want)) {
    throw_arg(env, what);
    return 0;
  }
  *data = p;
  return 1;
}

static napi_value aead_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2], self, target;
  if (napi_get_cb_info(env, info, &argc, args, &self, NULL) != napi_ok) return NULL;
  if (napi_get_new_target(env, info, &target) != napi_ok || target == NULL) return throw_arg(env, "Aead: call it with new");
  const uint8_t* key;
  size_t key_length;
  bool seal = false;
  if (argc < 2 || !get_bytes(env, args[0], AEAD_KEY_BYTES, &key, &key_length, "Aead: the key is a Buffer of 32 bytes")) {
    if (argc < 2) return throw_arg(env, "Aead: new Aead(key, seal)");
    return NULL;
  }
  if (napi_get_value_bool(env, args[1], &seal) != napi_ok) return throw_arg(env, "Aead: seal is a boolean");
  aead_t* aead = calloc(1, sizeof *aead);
  if (aead == NULL) return throw_crypto(env, "Aead: out of memory");
  aead->seal = seal;
  aead->ctx = EVP_CIPHER_CTX_new();
  if (aead->ctx == NULL || EVP_CipherInit_ex(aead->ctx, EVP_aes_256_gcm(), NULL, key, NULL, seal ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(aead->ctx);
    free(aead);
    return throw_crypto(env, "Aead: cannot set up AES-256-GCM");
  }
  if (napi_wrap(env, self, aead, aead_finalize, NULL, NULL) != napi_ok) {
    aead_finalize(env, aead, NULL);
    return throw_crypto(env, "Aead: napi_wrap failed");
  }
  return self;
}

// The pieces of a record to seal, read from the array argument once: a turn's frames are a few
// pieces as a rule (inline), up to AEAD_MAX_PIECES (on the heap).
#define AEAD_INLINE_PIECES 32

typedef struct {
  const uint8_t* data;
  size_t length;
} piece_t;

typedef struct {
  piece_t inline_pieces[AEAD_INLINE_PIECES];
  piece_t* at;
  uint32_t count;
  size_t total;
} pieces_t;

static void pieces_free(pieces_t* p) {
  if (p->at != p->inline_pieces) free(p->at);
  p->at = p->inline_pieces;
}

// The pieces of an array argument, their count and total length, checked; 0 with an error thrown
// (nothing to free then). Else the caller frees them (pieces_free).
static int get_pieces(napi_env env, napi_value array, pieces_t* p) {
  bool is_array = false;
  p->at = p->inline_pieces;
  p->total = 0;
  if (napi_is_array(env, array, &is_array) != napi_ok || !is_array || napi_get_array_length(env, array, &p->count) != napi_ok) {
    throw_arg(env, "Aead: pieces is an array of Buffers");
    return 0;
  }
  if (p->count > AEAD_MAX_PIECES) {
    throw_arg(env, "Aead: more than 4096 pieces");
    return 0;
  }
  if (p->count > AEAD_INLINE_PIECES) {
    p->at = malloc(p->count * sizeof *p->at);
    if (p->at == NULL) {
      p->at = p->inline_pieces;
      throw_crypto(env, "Aead: out of memory");
      return 0;
    }
  }
  for (uint32_t i = 0; i < p->count; i++) {
    napi_value element;
    if (napi_get_element(env, array, i, &element) != napi_ok ||
        !get_bytes(env, element, 0, &p->at[i].data, &p->at[i].length, "Aead: pieces is an array of Buffers")) {
      pieces_free(p);
      return 0;
    }
    p->total += p->at[i].length;
    if (p->total > AEAD_MAX_RECORD) {
      pieces_free(p);
      throw_arg(env, "Aead: a record is at most 16 MiB");
      return 0;
    }
  }
  if (p->total == 0) {
    pieces_free(p);
    throw_arg(env, "Aead: a record has at least one byte");
    return 0;
  }
  return 1;
}

// Runs every piece through the cipher into out (GCM: as many bytes out as in); 0 on failure.
static int update_pieces(EVP_CIPHER_CTX* ctx, const pieces_t* p, uint8_t* out) {
  for (uint32_t i = 0; i < p->count; i++) {
    int written = 0;
    size_t length = p->at[i].length;
    if (length == 0) continue;
    if (EVP_CipherUpdate(ctx, out, &written, p->at[i].data, (int)length) != 1 || (size_t)written != length) return 0;
    out += written;
  }
  return 1;
}

// An unsigned integer argument no larger than `max`; 0 with an error thrown.
static int get_size(napi_env env, napi_value value, size_t max, size_t* out, const char* what) {
  double d = -1;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0 && d <= (double)max) || d != (double)(size_t)d) {
    throw_arg(env, what);
    return 0;
  }
  *out = (size_t)d;
  return 1;
}

// A writable Buffer argument and an offset into it with room for `need` bytes; 0 with an error thrown.
static int get_out(napi_env env, napi_value buffer, napi_value offset, size_t need, uint8_t** out, const char* what) {
  bool is_buffer = false;
  void* p = NULL;
  size_t length = 0, at = 0;
  if (napi_is_buffer(env, buffer, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, buffer, &p, &length) != napi_ok) {
    throw_arg(env, what);
    return 0;
  }
  if (!get_size(env, offset, length, &at, what)) return 0;
  if (length - at < need) {
    throw_arg(env, what);
    return 0;
  }
  *out = (uint8_t*)p + at;
  return 1;
}

static napi_value aead_seal(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value args[4];
  aead_t* aead = ka_unwrap(env, info, &argc, args, "not an Aead");
  if (aead == NULL) return NULL;
  if (!aead->seal) return throw_arg(env, "Aead: this one opens");
  const uint8_t* nonce;
  size_t nonce_length;
  pieces_t pieces;
  uint8_t* out;
  if (argc < 4) return throw_arg(env, "Aead: seal(nonce, pieces, out, offset)");
  if (!get_bytes(env, args[0], AEAD_NONCE_BYTES, &nonce, &nonce_length, "Aead: the nonce is a Buffer of 12 bytes") ||
      !get_pieces(env, args[1], &pieces))
    return NULL;
  size_t total = pieces.total;
  if (!get_out(env, args[2], args[3], AEAD_HEADER_BYTES + total + AEAD_TAG_BYTES, &out, "Aead: out is a Buffer with room for the record at offset")) {
    pieces_free(&pieces);
    return NULL;
  }
  out[0] = (uint8_t)(total >> 24);
  out[1] = (uint8_t)(total >> 16);
  out[2] = (uint8_t)(total >> 8);
  out[3] = (uint8_t)total;
  int written = 0;
  EVP_CIPHER_CTX* ctx = aead->ctx;
  int ok = EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 1) == 1 && EVP_CipherUpdate(ctx, NULL, &written, out, AEAD_HEADER_BYTES) == 1 &&
           update_pieces(ctx, &pieces, out + AEAD_HEADER_BYTES) && EVP_CipherFinal_ex(ctx, out + AEAD_HEADER_BYTES + total, &written) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_BYTES, out + AEAD_HEADER_BYTES + total) == 1;
  pieces_free(&pieces);
  if (!ok) return throw_crypto(env, "Aead: sealing failed");
  napi_value result;
  napi_create_uint32(env, (uint32_t)(AEAD_HEADER_BYTES + total + AEAD_TAG_BYTES), &result);
  return result;
}

// Opening, in three steps, so that a record's ciphertext is deciphered as its reads arrive
// (a read's buffer is reused for the next): begin, update for each piece, final with the tag.
static aead_t* opener(napi_env env, napi_callback_info info, size_t* argc, napi_value* args) {
  aead_t* aead = ka_unwrap(env, info, argc, args, "not an Aead");
  if (aead == NULL) return NULL;
  if (aead->seal) {
    throw_arg(env, "Aead: this one seals");
    return NULL;
  }
  return aead;
}

static napi_value aead_begin(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  aead_t* aead = opener(env, info, &argc, args);
  if (aead == NULL) return NULL;
  const uint8_t *nonce, *header;
  size_t nonce_length, header_length;
  if (argc < 2) return throw_arg(env, "Aead: begin(nonce, header)");
  if (!get_bytes(env, args[0], AEAD_NONCE_BYTES, &nonce, &nonce_length, "Aead: the nonce is a Buffer of 12 bytes") ||
      !get_bytes(env, args[1], AEAD_HEADER_BYTES, &header, &header_length, "Aead: the header is a Buffer of 4 bytes"))
    return NULL;
  size_t length = (size_t)header[0] << 24 | (size_t)header[1] << 16 | (size_t)header[2] << 8 | header[3];
  if (length == 0 || length > AEAD_MAX_RECORD) return throw_arg(env, "Aead: a record is 1 byte to 16 MiB");
  int written = 0;
  aead->opening = false;
  if (EVP_CipherInit_ex(aead->ctx, NULL, NULL, NULL, nonce, 0) != 1 || EVP_CipherUpdate(aead->ctx, NULL, &written, header, AEAD_HEADER_BYTES) != 1)
    return throw_crypto(env, "Aead: opening failed");
  aead->opening = true;
  aead->left = length;
  return NULL;
}

static napi_value aead_update(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  aead_t* aead = opener(env, info, &argc, args);
  if (aead == NULL) return NULL;
  const uint8_t* in;
  size_t in_length;
  uint8_t* out;
  if (argc < 3) return throw_arg(env, "Aead: update(piece, out, offset)");
  if (!aead->opening) return throw_arg(env, "Aead: update before begin");
  if (!get_bytes(env, args[0], 0, &in, &in_length, "Aead: the piece is a Buffer")) return NULL;
  if (in_length > aead->left) return throw_arg(env, "Aead: more ciphertext than the record's length");
  if (!get_out(env, args[1], args[2], in_length, &out, "Aead: out is a Buffer with room for the piece at offset")) return NULL;
  if (in_length == 0) return NULL;
  int written = 0;
  if (EVP_CipherUpdate(aead->ctx, out, &written, in, (int)in_length) != 1 || (size_t)written != in_length) {
    aead->opening = false;
    return throw_crypto(env, "Aead: opening failed");
  }
  aead->left -= in_length;
  return NULL;
}

static napi_value aead_final(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  aead_t* aead = opener(env, info, &argc, args);
  if (aead == NULL) return NULL;
  const uint8_t* tag;
  size_t tag_length;
  if (argc < 1) return throw_arg(env, "Aead: final(tag)");
  if (!aead->opening || aead->left != 0) return throw_arg(env, "Aead: final before the record's whole ciphertext");
  if (!get_bytes(env, args[0], AEAD_TAG_BYTES, &tag, &tag_length, "Aead: the tag is a Buffer of 16 bytes")) return NULL;
  aead->opening = false;
  uint8_t tag_copy[AEAD_TAG_BYTES];
  uint8_t end[AEAD_TAG_BYTES];
  int written = 0;
  memcpy(tag_copy, tag, AEAD_TAG_BYTES);
  if (EVP_CIPHER_CTX_ctrl(aead->ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_BYTES, tag_copy) != 1) return throw_crypto(env, "Aead: opening failed");
  napi_value result;
  // false: the tag does not verify, and the caller hands on none of what update deciphered.
  napi_get_boolean(env, EVP_CipherFinal_ex(aead->ctx, end, &written) == 1, &result);
  return result;
}

int ka_aead_init(napi_env env, napi_value exports) {
  static const napi_property_descriptor methods[] = {
      KA_METHOD("seal", aead_seal),
      KA_METHOD("begin", aead_begin),
      KA_METHOD("update", aead_update),
      KA_METHOD("final", aead_final),
  };
  return ka_define_class(env, exports, "Aead", aead_new, methods, sizeof methods / sizeof methods[0]);
}
