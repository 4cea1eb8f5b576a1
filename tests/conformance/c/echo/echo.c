/* The conformance suite's echo processor (tests/conformance/README.md), in C. */
#include "wasmstream_guest.h"

static uint64_t echoed;

bool exports_processor_init(processor_config_t *config, processor_error_t *err) {
    (void)err;
    processor_config_free(config);
    return true;
}

bool exports_processor_process(processor_input_record_t *input, processor_list_output_record_t *ret,
                               processor_error_t *err) {
    if (input->value.is_some && input->value.val.len == 4 && memcmp(input->value.val.ptr, "fail", 4) == 0) {
        wsg_fail(err, "asked to fail at offset %lld", (long long)input->offset);
        processor_input_record_free(input);
        return false;
    }
    /* The input's key, value and headers move into the output as they are. */
    processor_output_record_t *r = calloc(1, sizeof *r);
    r->key = input->key;
    r->value = input->value;
    r->headers = input->headers;
    processor_string_free(&input->topic);
    ret->ptr = r;
    ret->len = 1;
    echoed++;
    return true;
}

void exports_processor_snapshot(processor_list_u8_t *ret) {
    *ret = wsg_u64_be(echoed);
}

bool exports_processor_restore(processor_list_u8_t *snapshot, processor_snapshot_origin_t *origin,
                               processor_error_t *err) {
    return wsg_restore_u64(snapshot, origin, &echoed, err);
}
