/* Wire format of reflex protocol version 1; mirrors protocol/src/{cobs,frame}.rs line by line. */
#include "codec.h"

#include <string.h>

#ifdef __AVR__
#include <util/crc16.h>
#endif

uint16_t crc16_update(uint16_t crc, uint8_t byte)
{
#ifdef __AVR__
    /* avr-libc's XMODEM step is CRC-16/CCITT-FALSE's step (poly 0x1021, MSB first). */
    return _crc_xmodem_update(crc, byte);
#else
    crc ^= (uint16_t)byte << 8;
    for (uint8_t i = 0; i < 8; i++) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
#endif
}

uint16_t crc16(const uint8_t *bytes, uint8_t len)
{
    uint16_t crc = 0xFFFFu;
    for (uint8_t i = 0; i < len; i++) {
        crc = crc16_update(crc, bytes[i]);
    }
    return crc;
}

uint8_t cobs_encode(const uint8_t *in, uint8_t len, uint8_t *out)
{
    uint8_t code_idx = 0, write = 1, code = 1;
    for (uint8_t i = 0; i < len; i++) {
        uint8_t byte = in[i];
        if (byte != 0) {
            out[write++] = byte;
            code++;
        }
        if (byte == 0 || code == 0xFF) {
            out[code_idx] = code;
            code = 1;
            code_idx = write++;
        }
    }
    out[code_idx] = code;
    return write;
}

int16_t cobs_decode_in_place(uint8_t *buf, uint8_t len)
{
    uint8_t read = 0, write = 0;
    while (read < len) {
        uint8_t code = buf[read];
        if (code == 0) {
            return -1;
        }
        read++;
        uint16_t end = (uint16_t)read + code - 1u;
        if (end > len) {
            return -1;
        }
        while (read < end) {
            buf[write++] = buf[read++];
        }
        /* A block shorter than 254 data bytes stands for its data and a zero, except the last. */
        if (code != 0xFF && read < len) {
            buf[write++] = 0;
        }
    }
    return write;
}

uint8_t frame_encode(const uint8_t *payload, uint8_t len, uint8_t *out)
{
    uint8_t raw[MAX_PAYLOAD_LEN + 2u];
    if (len > MAX_PAYLOAD_LEN) {
        return 0;
    }
    for (uint8_t i = 0; i < len; i++) {
        raw[i] = payload[i];
    }
    put_u16(raw + len, crc16(payload, len));
    uint8_t written = cobs_encode(raw, (uint8_t)(len + 2u), out);
    out[written] = 0;
    return (uint8_t)(written + 1u);
}

void frame_rx_init(frame_rx_t *rx)
{
    rx->len = 0;
    rx->overlong = 0;
}

rx_result_t frame_rx_push(frame_rx_t *rx, uint8_t byte, const uint8_t **payload,
                          uint8_t *payload_len)
{
    if (byte != 0) {
        if (rx->len < sizeof rx->buf) {
            rx->buf[rx->len++] = byte;
        } else {
            rx->overlong = 1;
        }
        return RX_NONE;
    }
    uint8_t len = rx->len, overlong = rx->overlong;
    rx->len = 0;
    rx->overlong = 0;
    if (overlong) {
        return RX_BAD_FRAME;
    }
    if (len == 0) {
        return RX_NONE; /* a leading delimiter flushes; not an error */
    }
    int16_t decoded = cobs_decode_in_place(rx->buf, len);
    if (decoded < 0 || decoded <= 2) {
        return RX_BAD_FRAME;
    }
    uint8_t plen = (uint8_t)(decoded - 2);
    if (crc16(rx->buf, plen) != get_u16(rx->buf + plen)) {
        return RX_BAD_CRC;
    }
    *payload = rx->buf;
    *payload_len = plen;
    return RX_FRAME;
}

void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)v);
    put_u16(p + 2, (uint16_t)(v >> 16));
}

void put_u64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* AVR and x86 are little-endian: a copy, where `v >> 32` is a 32-step loop on the AVR. */
    memcpy(p, &v, sizeof v);
#else
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
#endif
}

uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

uint32_t get_u32(const uint8_t *p)
{
    return get_u16(p) | ((uint32_t)get_u16(p + 2) << 16);
}

uint8_t h2d_payload_len(uint8_t t)
{
    switch (t) {
    case H2D_HELLO: return H2D_HEADER_LEN + 2u;
    case H2D_SET_LEVEL: return H2D_HEADER_LEN + 2u;
    case H2D_PULSE: return H2D_HEADER_LEN + 5u;
    case H2D_PULSE_TRAIN: return H2D_HEADER_LEN + 13u;
    case H2D_HEARTBEAT:
    case H2D_ALL_OFF:
    case H2D_QUERY_STATUS:
    case H2D_SYNC_REQUEST: return H2D_HEADER_LEN;
    default: return 0;
    }
}

static uint8_t header(uint8_t *out, uint8_t type, uint16_t seq)
{
    out[0] = type;
    put_u16(out + 1, seq);
    return 3;
}

uint8_t d2h_hello(uint8_t *out, uint16_t seq, uint16_t protocol_version, uint32_t device_id,
                  uint16_t firmware_version, uint8_t channels)
{
    header(out, D2H_HELLO, seq);
    put_u16(out + 3, protocol_version);
    put_u32(out + 5, device_id);
    put_u16(out + 9, firmware_version);
    out[11] = channels;
    return 12;
}

uint8_t d2h_ack(uint8_t *out, uint16_t seq, uint32_t tag, uint64_t device_time_us)
{
    header(out, D2H_ACK, seq);
    put_u32(out + 3, tag);
    put_u64(out + 7, device_time_us);
    return 15;
}

uint8_t d2h_sync_reply(uint8_t *out, uint16_t seq, uint64_t device_time_us)
{
    header(out, D2H_SYNC_REPLY, seq);
    put_u64(out + 3, device_time_us);
    return 11;
}

uint8_t d2h_status(uint8_t *out, uint16_t seq, uint32_t levels, uint64_t device_time_us)
{
    header(out, D2H_STATUS, seq);
    put_u32(out + 3, levels);
    put_u64(out + 7, device_time_us);
    return 15;
}

uint8_t d2h_input_edge(uint8_t *out, uint16_t seq, uint8_t channel, uint8_t high,
                       uint64_t device_time_us)
{
    header(out, D2H_INPUT_EDGE, seq);
    out[3] = channel;
    out[4] = high;
    put_u64(out + 5, device_time_us);
    return 13;
}

uint8_t d2h_error(uint8_t *out, uint16_t seq, uint8_t code)
{
    header(out, D2H_ERROR, seq);
    out[3] = code;
    return 4;
}
