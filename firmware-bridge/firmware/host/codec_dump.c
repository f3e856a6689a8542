/* codec-dump: encodes a fixed list of messages with the firmware's own codec (src/codec.c,
 * compiled for the host) and prints one line per message, `name: <frame hex>`. The Rust test
 * firmware-bridge/tests/c_codec.rs encodes the same messages with reflex-protocol and compares.
 * Every frame is also fed back through the firmware's frame accumulator, which must return the
 * same payload (exit status 1 otherwise). */
#include <stdio.h>
#include <string.h>

#include "codec.h"

static int failures;

static void emit(const char *name, const uint8_t *payload, uint8_t len)
{
    uint8_t frame[MAX_FRAME_LEN];
    uint8_t n = frame_encode(payload, len, frame);
    printf("%s:", name);
    for (uint8_t i = 0; i < n; i++) {
        printf(" %02x", frame[i]);
    }
    printf("\n");

    frame_rx_t rx;
    frame_rx_init(&rx);
    const uint8_t *decoded = NULL;
    uint8_t decoded_len = 0;
    rx_result_t r = RX_NONE;
    for (uint8_t i = 0; i < n; i++) {
        r = frame_rx_push(&rx, frame[i], &decoded, &decoded_len);
    }
    if (r != RX_FRAME || decoded_len != len || memcmp(decoded, payload, len) != 0) {
        fprintf(stderr, "%s: the frame does not decode back to its payload\n", name);
        failures++;
    }
}

/* Host message header: type, seq, tag. */
static uint8_t h2d(uint8_t *p, uint8_t type, uint16_t seq, uint32_t tag)
{
    p[0] = type;
    put_u16(p + 1, seq);
    put_u32(p + 3, tag);
    return H2D_HEADER_LEN;
}

int main(void)
{
    uint8_t p[MAX_PAYLOAD_LEN];
    uint8_t n;

    /* Host -> device: the SPEC examples. */
    n = h2d(p, H2D_HELLO, 1, 0); put_u16(p + n, 1); emit("h2d-hello", p, n + 2);
    emit("h2d-heartbeat", p, h2d(p, H2D_HEARTBEAT, 2, 0));
    n = h2d(p, H2D_SET_LEVEL, 3, 1234); p[7] = 2; p[8] = 1; emit("h2d-set-level", p, 9);
    n = h2d(p, H2D_PULSE, 4, 0x12345); p[7] = 0; put_u32(p + 8, 5000); emit("h2d-pulse", p, 12);
    n = h2d(p, H2D_PULSE_TRAIN, 5, 1000); p[7] = 1; put_u32(p + 8, 25000); put_u32(p + 12, 5000);
    put_u32(p + 16, 10); emit("h2d-pulse-train", p, 20);
    emit("h2d-all-off", p, h2d(p, H2D_ALL_OFF, 6, 0));
    emit("h2d-query-status", p, h2d(p, H2D_QUERY_STATUS, 7, 0));
    emit("h2d-sync-request", p, h2d(p, H2D_SYNC_REQUEST, 8, 0));

    /* Device -> host: built by the same functions the firmware replies with. */
    emit("d2h-hello", p, d2h_hello(p, 1, 1, 0x12345678u, 0x0102u, 4));
    emit("d2h-ack", p, d2h_ack(p, 4, 74565u, 1234567890ull));
    emit("d2h-sync-reply", p, d2h_sync_reply(p, 8, 1000020ull));
    emit("d2h-status", p, d2h_status(p, 7, 0x5u, 2000000ull));
    emit("d2h-input-edge", p, d2h_input_edge(p, 0, 0, 1, 3000000ull));
    emit("d2h-error", p, d2h_error(p, 9, ERR_WATCHDOG_EXPIRED));

    /* Extremes: all-ones and all-zero fields (long COBS runs, zero-heavy payloads). */
    emit("d2h-ack-max", p, d2h_ack(p, 0xFFFF, 0xFFFFFFFFu, 0xFFFFFFFFFFFFFFFFull));
    emit("d2h-ack-zero", p, d2h_ack(p, 0, 0, 0));
    emit("d2h-status-max", p, d2h_status(p, 0xFFFF, 0xFu, 0x0123456789ABCDEFull));
    emit("d2h-sync-reply-zero", p, d2h_sync_reply(p, 0, 0));
    for (uint8_t code = ERR_BAD_CRC; code <= ERR_WATCHDOG_EXPIRED; code++) {
        char name[32];
        snprintf(name, sizeof name, "d2h-error-%u", code);
        emit(name, p, d2h_error(p, (uint16_t)(0x100u * code), code));
    }
    n = h2d(p, H2D_PULSE_TRAIN, 0xFFFF, 0xFFFFFFFFu); p[7] = 3; put_u32(p + 8, 0xFFFFFFFFu);
    put_u32(p + 12, 1); put_u32(p + 16, 0xFFFFFFFFu); emit("h2d-pulse-train-max", p, 20);
    return failures ? 1 : 0;
}
