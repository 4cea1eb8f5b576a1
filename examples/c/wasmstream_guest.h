/*
 * A small helper for wasmstream processors written in C, over the bindings
 * `wit-bindgen c wit --world processor` generates (processor.h).
 *
 * Ownership, as the generated bindings define it:
 * - An export's arguments belong to the export: free them before returning
 *   (`processor_input_record_free(input)`, `processor_config_free(config)`,
 *   `processor_list_u8_free(snapshot)`, `processor_snapshot_origin_free(origin)`).
 * - What an export returns (`ret`, `err`) must be allocated with malloc (the
 *   helpers below do); the bindings free it after the host has copied it.
 * - An import's arguments are borrowed (the host copies them); what it returns
 *   belongs to the caller (`wsg_state_get` returns a list to free).
 *
 * The helpers here are static inline: include this header in one file.
 */
#ifndef WASMSTREAM_GUEST_H
#define WASMSTREAM_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor.h"

/* A borrowed byte list (no copy): for import arguments. */
static inline processor_list_u8_t wsg_bytes(const void *ptr, size_t len) {
    processor_list_u8_t l = {(uint8_t *)ptr, len};
    return l;
}

/* A malloc'd copy of `len` bytes (what an export returns must be malloc'd). */
static inline processor_list_u8_t wsg_bytes_dup(const void *ptr, size_t len) {
    processor_list_u8_t l = {len ? malloc(len) : NULL, len};
    if (len) memcpy(l.ptr, ptr, len);
    return l;
}

/* State: the task's host-managed key-value store. Returns whether the key
 * exists; `*value` (owned by the caller) is set if it does. */
static inline bool wsg_state_get(const void *key, size_t key_len, processor_list_u8_t *value) {
    processor_list_u8_t k = wsg_bytes(key, key_len);
    return wasmstream_processor_state_get(&k, value);
}

static inline void wsg_state_put(const void *key, size_t key_len, const void *value, size_t value_len) {
    processor_list_u8_t k = wsg_bytes(key, key_len), v = wsg_bytes(value, value_len);
    wasmstream_processor_state_put(&k, &v);
}

static inline void wsg_state_delete(const void *key, size_t key_len) {
    processor_list_u8_t k = wsg_bytes(key, key_len);
    wasmstream_processor_state_delete(&k);
}

/* The u64 of 8 bytes big-endian (the Rust SDK's encoding of a counter). */
static inline uint64_t wsg_be_to_u64(const uint8_t *b) {
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n = n << 8 | b[i];
    return n;
}

static inline void wsg_u64_to_be(uint64_t n, uint8_t b[8]) {
    for (int i = 7; i >= 0; i--, n >>= 8) b[i] = (uint8_t)n;
}

/* A counter stored as 8 bytes big-endian; 0 if absent or not 8 bytes. */
static inline uint64_t wsg_state_get_u64(const void *key, size_t key_len) {
    processor_list_u8_t v;
    uint64_t n = 0;
    if (!wsg_state_get(key, key_len, &v)) return 0;
    if (v.len == 8) n = wsg_be_to_u64(v.ptr);
    processor_list_u8_free(&v);
    return n;
}

static inline void wsg_state_put_u64(const void *key, size_t key_len, uint64_t n) {
    uint8_t b[8];
    wsg_u64_to_be(n, b);
    wsg_state_put(key, key_len, b, 8);
}

/* 8 bytes big-endian, malloc'd: a snapshot of one counter. */
static inline processor_list_u8_t wsg_u64_be(uint64_t n) {
    uint8_t b[8];
    wsg_u64_to_be(n, b);
    return wsg_bytes_dup(b, 8);
}

/* Sets the error an export returns (printf-style) and returns false, for
 * `return wsg_fail(err, "...", ...);` The host names the record. */
static inline bool wsg_fail(processor_error_t *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    err->ptr = malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)err->ptr, (size_t)n + 1, fmt, ap);
    va_end(ap);
    err->len = (size_t)n;
    return false;
}

/* The body of `exports_processor_restore` for a snapshot of one counter
 * (wsg_u64_be): sets *n, or the error if the snapshot is not 8 bytes; frees
 * the snapshot and the origin (the export owns both).
 *
 * `origin` says which module took the snapshot: `module_digest` (the SHA-256
 * of that component, lowercase hex) and `same_module` (false after a hot swap
 * or a change of the configured module: the bytes may be in an older
 * version's format). A counter has one format, so this ignores it; a
 * processor whose format changed reads it before calling this (or instead of
 * it: then it frees both itself) and migrates the bytes. */
static inline bool wsg_restore_u64(processor_list_u8_t *snapshot, processor_snapshot_origin_t *origin, uint64_t *n,
                                   processor_error_t *err) {
    bool ok = snapshot->len == 8;
    if (ok) *n = wsg_be_to_u64(snapshot->ptr);
    else wsg_fail(err, "snapshot has %zu bytes, expected 8", snapshot->len);
    processor_list_u8_free(snapshot);
    processor_snapshot_origin_free(origin);
    return ok;
}

/* A growable list of output records (malloc'd, for `ret`). */
typedef struct {
    processor_list_output_record_t list;
    size_t cap;
} wsg_outputs_t;

/* Appends an output for the first output topic with the input's timestamp:
 * copies of `key` and `value` (NULL: absent) and `n_headers` headers
 * (key, value, value length; a NULL value: a header without one). */
static inline processor_output_record_t *wsg_emit(wsg_outputs_t *o, const void *key, size_t key_len,
                                                  const void *value, size_t value_len) {
    if (o->list.len == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->list.ptr = realloc(o->list.ptr, o->cap * sizeof(processor_output_record_t));
    }
    processor_output_record_t *r = &o->list.ptr[o->list.len++];
    memset(r, 0, sizeof *r);
    if (key) {
        r->key.is_some = true;
        r->key.val = wsg_bytes_dup(key, key_len);
    }
    if (value) {
        r->value.is_some = true;
        r->value.val = wsg_bytes_dup(value, value_len);
    }
    return r;
}

/* Appends a header to an output record (copies). */
static inline void wsg_add_header(processor_output_record_t *r, const char *key, size_t key_len,
                                  const void *value, size_t value_len, bool has_value) {
    wasmstream_processor_types_list_header_t *h = &r->headers;
    h->ptr = realloc(h->ptr, (h->len + 1) * sizeof *h->ptr);
    wasmstream_processor_types_header_t *x = &h->ptr[h->len++];
    processor_string_dup_n(&x->key, key, key_len);
    x->value.is_some = has_value;
    x->value.val = has_value ? wsg_bytes_dup(value, value_len) : wsg_bytes(NULL, 0);
}

/* Writes a line to the host's log. */
static inline void wsg_log(wasmstream_processor_log_level_t level, const char *message) {
    processor_string_t s;
    processor_string_set(&s, message);
    wasmstream_processor_log_log(level, &s);
}

#endif
