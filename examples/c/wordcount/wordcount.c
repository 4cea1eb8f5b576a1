/*
 * Word count, in C: the same processor as the Rust example
 * (examples/wordcount), output for output.
 *
 * Splits each record's value into words (lower-cased, split at anything that
 * is not a letter, a digit or an apostrophe, apostrophes trimmed from both
 * ends), keeps one counter per word in host state under "w/" + word (8 bytes
 * big-endian, as the Rust SDK's put_u64), and emits one `word -> count`
 * record per word occurrence, the count being the running total after it,
 * with a `source-partition` header. Its snapshot is the number of records it
 * has processed, 8 bytes big-endian.
 *
 * Config ([processor.config]): `min-length` (default 1) drops shorter words.
 *
 * Where it differs from Rust: letters are wasi-libc's iswalpha (Unicode
 * letters, close to Rust's Alphabetic property), digits are ASCII only (Rust
 * also counts other numerals), and lower-casing is towlower, one code point
 * to one (Rust's to_lowercase maps İ to two code points and a final capital
 * sigma to ς).
 */
#include <wctype.h>

#include "wasmstream_guest.h"

static uint64_t processed;
static size_t min_length = 1;

/* Decodes one UTF-8 code point at s[*i] (strict: no overlongs, surrogates or
 * values past U+10FFFF); returns -1 if the bytes are not UTF-8. */
static int32_t next_code_point(const uint8_t *s, size_t len, size_t *i) {
    uint8_t b = s[*i];
    int n;
    int32_t c, min;
    if (b < 0x80) {
        (*i)++;
        return b;
    } else if ((b & 0xE0) == 0xC0) {
        n = 1, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        n = 2, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        n = 3, c = b & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    for (int k = 1; k <= n; k++) {
        if (*i + k >= len || (s[*i + k] & 0xC0) != 0x80) return -1;
        c = c << 6 | (s[*i + k] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    *i += (size_t)n + 1;
    return c;
}

static size_t put_utf8(uint8_t *out, int32_t c) {
    if (c < 0x80) return out[0] = (uint8_t)c, 1;
    if (c < 0x800) return out[0] = 0xC0 | c >> 6, out[1] = 0x80 | (c & 0x3F), 2;
    if (c < 0x10000)
        return out[0] = 0xE0 | c >> 12, out[1] = 0x80 | (c >> 6 & 0x3F), out[2] = 0x80 | (c & 0x3F), 3;
    out[0] = 0xF0 | c >> 18, out[1] = 0x80 | (c >> 12 & 0x3F), out[2] = 0x80 | (c >> 6 & 0x3F);
    out[3] = 0x80 | (c & 0x3F);
    return 4;
}

static bool is_word_char(int32_t c) {
    return c == '\'' || (c >= '0' && c <= '9') || iswalpha((wint_t)c);
}

/* Counts one word (code points in `word`, `n` of them) and emits its output. */
static void count_word(const int32_t *word, size_t n, const char *partition, wsg_outputs_t *out) {
    /* Apostrophes trimmed from both ends. */
    while (n > 0 && word[0] == '\'') word++, n--;
    while (n > 0 && word[n - 1] == '\'') n--;
    if (n == 0 || n < min_length) return;
    uint8_t *key = malloc(2 + 4 * n);
    size_t len = 2;
    key[0] = 'w', key[1] = '/';
    for (size_t k = 0; k < n; k++) len += put_utf8(key + len, (int32_t)towlower((wint_t)word[k]));
    uint64_t count = wsg_state_get_u64(key, len) + 1;
    wsg_state_put_u64(key, len, count);
    char digits[24];
    int d = snprintf(digits, sizeof digits, "%llu", (unsigned long long)count);
    processor_output_record_t *r = wsg_emit(out, key + 2, len - 2, digits, (size_t)d);
    wsg_add_header(r, "source-partition", 16, partition, strlen(partition), true);
    free(key);
}

bool exports_processor_init(processor_config_t *config, processor_error_t *err) {
    bool ok = true;
    for (size_t i = 0; i < config->len && ok; i++) {
        processor_string_t *k = &config->ptr[i].f0, *v = &config->ptr[i].f1;
        if (k->len == 10 && memcmp(k->ptr, "min-length", 10) == 0) {
            size_t n = 0;
            bool digits = v->len > 0;
            for (size_t j = 0; j < v->len; j++) {
                if (v->ptr[j] < '0' || v->ptr[j] > '9') digits = false;
                else n = n * 10 + (v->ptr[j] - '0');
            }
            if (digits) min_length = n;
            else ok = wsg_fail(err, "processor config `min-length` = \"%.*s\": not a non-negative integer", (int)v->len, v->ptr);
        }
    }
    processor_config_free(config);
    return ok;
}

bool exports_processor_process(processor_input_record_t *input, processor_list_output_record_t *ret,
                               processor_error_t *err) {
    const uint8_t *s = input->value.is_some ? input->value.val.ptr : NULL;
    size_t len = input->value.is_some ? input->value.val.len : 0;
    wsg_outputs_t out = {{NULL, 0}, 0};
    char partition[16];
    snprintf(partition, sizeof partition, "%d", input->partition);
    int32_t *word = malloc(sizeof(int32_t) * (len + 1));
    size_t n = 0, i = 0;
    bool ok = true;
    /* Checked first, as Rust's from_utf8: a bad value has no outputs. */
    for (size_t j = 0; j < len;) {
        if (next_code_point(s, len, &j) < 0) {
            ok = wsg_fail(err, "value of %.*s/%d@%lld is not UTF-8: invalid byte sequence at index %zu",
                          (int)input->topic.len, input->topic.ptr, input->partition, (long long)input->offset, j);
            break;
        }
    }
    while (ok && i < len) {
        int32_t c = next_code_point(s, len, &i);
        if (is_word_char(c)) {
            word[n++] = c;
        } else if (n > 0) {
            count_word(word, n, partition, &out);
            n = 0;
        }
    }
    if (ok && n > 0) count_word(word, n, partition, &out);
    free(word);
    processor_input_record_free(input);
    if (!ok) {
        processor_list_output_record_free(&out.list);
        return false;
    }
    processed++;
    *ret = out.list;
    return true;
}

void exports_processor_snapshot(processor_list_u8_t *ret) {
    *ret = wsg_u64_be(processed);
}

bool exports_processor_restore(processor_list_u8_t *snapshot, processor_snapshot_origin_t *origin,
                               processor_error_t *err) {
    return wsg_restore_u64(snapshot, origin, &processed, err);
}
