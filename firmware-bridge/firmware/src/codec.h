/* Wire format of reflex protocol version 1 (protocol/SPEC.md): COBS framing with a
 * CRC-16/CCITT-FALSE, little-endian fixed layouts. Portable C99: no hardware, no allocation,
 * so the host test (host/codec_dump.c) compiles exactly the code the firmware runs. */
#ifndef REFLEX_CODEC_H
#define REFLEX_CODEC_H

#include <stdint.h>

#define PROTOCOL_VERSION 1u
/* Longest frame in bytes, delimiter included; longest payload (before CRC and COBS). */
#define MAX_FRAME_LEN 64u
#define MAX_PAYLOAD_LEN (MAX_FRAME_LEN - 4u)

/* Host-to-device message types and their fixed payload lengths (header of 7 bytes). */
enum {
    H2D_HELLO = 0x01, H2D_HEARTBEAT = 0x02, H2D_SET_LEVEL = 0x03, H2D_PULSE = 0x04,
    H2D_PULSE_TRAIN = 0x05, H2D_ALL_OFF = 0x06, H2D_QUERY_STATUS = 0x07, H2D_SYNC_REQUEST = 0x08
};
#define H2D_HEADER_LEN 7u

/* Device-to-host message types. */
enum {
    D2H_HELLO = 0x81, D2H_ACK = 0x82, D2H_SYNC_REPLY = 0x83, D2H_STATUS = 0x84,
    D2H_INPUT_EDGE = 0x85, D2H_ERROR = 0x86
};

/* Error codes carried by D2H_ERROR (their byte values are part of the wire format). */
enum {
    ERR_BAD_CRC = 1, ERR_BAD_FRAME = 2, ERR_UNKNOWN_COMMAND = 3, ERR_BAD_ARGUMENT = 4,
    ERR_VERSION_MISMATCH = 5, ERR_WATCHDOG_EXPIRED = 6
};

/* One CRC-16/CCITT-FALSE step (poly 0x1021, not reflected); start from 0xFFFF. */
uint16_t crc16_update(uint16_t crc, uint8_t byte);
uint16_t crc16(const uint8_t *bytes, uint8_t len);

/* COBS-encodes len bytes into out (room for len + 1 bytes); returns the encoded length. */
uint8_t cobs_encode(const uint8_t *in, uint8_t len, uint8_t *out);
/* Decodes COBS in place; returns the decoded length, or -1 when the bytes are not valid COBS. */
int16_t cobs_decode_in_place(uint8_t *buf, uint8_t len);

/* Writes the frame of payload (CRC, COBS, 0x00) into out (MAX_FRAME_LEN bytes); returns its
 * length, or 0 when the payload is too long. */
uint8_t frame_encode(const uint8_t *payload, uint8_t len, uint8_t *out);

/* Result of feeding one byte to the frame accumulator. */
typedef enum { RX_NONE = 0, RX_FRAME, RX_BAD_CRC, RX_BAD_FRAME } rx_result_t;

/* Streaming frame accumulator with a fixed 63-byte buffer; resynchronises on every 0x00. */
typedef struct {
    uint8_t buf[MAX_FRAME_LEN - 1u];
    uint8_t len;
    uint8_t overlong;
} frame_rx_t;

void frame_rx_init(frame_rx_t *rx);
/* Feeds one byte. On RX_FRAME, *payload and *payload_len give the CRC-checked payload (CRC
 * removed), valid until the next call. */
rx_result_t frame_rx_push(frame_rx_t *rx, uint8_t byte, const uint8_t **payload,
                          uint8_t *payload_len);

/* Little-endian field access. */
void put_u16(uint8_t *p, uint16_t v);
void put_u32(uint8_t *p, uint32_t v);
void put_u64(uint8_t *p, uint64_t v);
uint16_t get_u16(const uint8_t *p);
uint32_t get_u32(const uint8_t *p);

/* Payload length of host message type t, header included; 0 when the type is unknown. */
uint8_t h2d_payload_len(uint8_t t);

/* Device-to-host payloads: each writes into out (MAX_PAYLOAD_LEN bytes) and returns the length. */
uint8_t d2h_hello(uint8_t *out, uint16_t seq, uint16_t protocol_version, uint32_t device_id,
                  uint16_t firmware_version, uint8_t channels);
uint8_t d2h_ack(uint8_t *out, uint16_t seq, uint32_t tag, uint64_t device_time_us);
uint8_t d2h_sync_reply(uint8_t *out, uint16_t seq, uint64_t device_time_us);
uint8_t d2h_status(uint8_t *out, uint16_t seq, uint32_t levels, uint64_t device_time_us);
uint8_t d2h_input_edge(uint8_t *out, uint16_t seq, uint8_t channel, uint8_t high,
                       uint64_t device_time_us);
uint8_t d2h_error(uint8_t *out, uint16_t seq, uint8_t code);

#endif
