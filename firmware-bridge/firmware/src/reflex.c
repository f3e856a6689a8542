/* reflex firmware core: protocol handling, the output scheduler and the protocol watchdog.
 * Portable: all hardware access goes through hw.h. See protocol/SPEC.md for the contract. */
#include "codec.h"
#include "hw.h"

#ifndef DEVICE_ID
#define DEVICE_ID 0x52465831ul /* "RFX1" */
#endif
#ifndef FIRMWARE_VERSION
#define FIRMWARE_VERSION 1u
#endif
/* Outputs go off after this many ms without a valid frame (once handshaken); 0 disables. */
#ifndef WATCHDOG_MS
#define WATCHDOG_MS 50u
#endif

/* Pulses and trains start this long after their command is decoded: every edge of a pulse is
 * then driven by the edge interrupt (one code path, so widths are exact) and the main loop has
 * time to set the program up. The Ack carries the time of the first rising edge. */
#define ACTUATION_DELAY_US 100u

/* One output channel's program: a level, or a pulse train in progress. Times in ticks. */
typedef struct {
    uint8_t busy;        /* edges are scheduled (a pulse or train is running) */
    uint8_t high;        /* current level */
    uint8_t next_level;  /* level the next edge drives */
    uint8_t ack_pending; /* the first rising edge has not happened yet: ack it when it does */
    uint16_t seq;        /* the command's seq and tag, for its Ack */
    uint32_t tag;
    uint32_t remaining; /* rising edges still to come after the current pulse */
    uint64_t next;      /* time of the next edge */
    uint64_t rise;      /* time of the current (or last) rising edge */
    uint64_t period;
    uint64_t width;
} channel_t;

static channel_t channels[HW_CHANNELS];

/* Acks of first rising edges, written by the edge interrupt, sent by the main loop. */
#define ACK_QUEUE_LEN 8u /* power of two */
typedef struct {
    uint16_t seq;
    uint32_t tag;
    uint64_t ticks;
} ack_t;
static ack_t acks[ACK_QUEUE_LEN];
static volatile uint8_t ack_head, ack_tail;

uint8_t sched_next_valid;
uint8_t sched_next_channel;
uint8_t sched_next_level;
uint64_t sched_next_ticks;
uint16_t sched_late_ticks;

static frame_rx_t rx;
static uint8_t handshaken;
static uint8_t watchdog_armed;
static uint64_t watchdog_fed_ticks;
static uint16_t device_seq;

/* Finds the earliest scheduled edge and arms the timer for it. Lock held. */
static uint8_t sched_recompute_locked(void)
{
    uint8_t found = 0;
    for (uint8_t i = 0; i < HW_CHANNELS; i++) {
        const channel_t *c = &channels[i];
        if (c->busy && (!found || c->next < sched_next_ticks)) {
            found = 1;
            sched_next_ticks = c->next;
            sched_next_channel = i;
            sched_next_level = c->next_level;
        }
    }
    sched_next_valid = found;
    return found ? hw_arm_locked() : 0;
}

uint8_t sched_edge_done_locked(void)
{
    channel_t *c = &channels[sched_next_channel];
    c->high = sched_next_level;
    if (c->high) {
        if (c->ack_pending) {
            c->ack_pending = 0;
            uint8_t next = (uint8_t)((ack_head + 1u) & (ACK_QUEUE_LEN - 1u));
            if (next != ack_tail) { /* never full: the main loop drains it every pass */
                acks[ack_head] = (ack_t){c->seq, c->tag, c->rise + sched_late_ticks};
                ack_head = next;
            }
        }
        c->next = c->rise + c->width;
        c->next_level = 0;
    } else if (c->remaining) {
        c->remaining--;
        c->rise += c->period; /* rising edges stay on the period grid: no accumulated error */
        c->next = c->rise;
        c->next_level = 1;
    } else {
        c->busy = 0;
    }
    return sched_recompute_locked();
}

static void send_payload(const uint8_t *payload, uint8_t len)
{
    uint8_t frame[MAX_FRAME_LEN];
    hw_uart_write(frame, frame_encode(payload, len, frame));
}

static void send_error(uint16_t seq, uint8_t code)
{
    uint8_t p[MAX_PAYLOAD_LEN];
    send_payload(p, d2h_error(p, seq, code));
}

static void send_ack(uint16_t seq, uint32_t tag, uint64_t ticks)
{
    uint8_t p[MAX_PAYLOAD_LEN];
    send_payload(p, d2h_ack(p, seq, tag, ticks / HW_TICKS_PER_US));
}

/* Every channel low, every pulse cancelled; returns the time the pins changed. Lock held. */
static uint64_t all_off_locked(void)
{
    uint64_t t = hw_all_off_locked();
    for (uint8_t i = 0; i < HW_CHANNELS; i++) {
        channels[i].busy = 0;
        channels[i].high = 0;
        channels[i].ack_pending = 0;
    }
    sched_recompute_locked();
    return t;
}

static void all_off(void)
{
    uint8_t s = hw_lock();
    all_off_locked();
    hw_unlock(s);
}

/* A frame that could not be decoded may have been an output command: everything off. */
static void refuse_frame(uint8_t code)
{
    all_off();
    send_error(device_seq++, code);
}

static uint8_t pulse_args_ok(uint32_t period_us, uint32_t width_us, uint32_t count)
{
    return width_us > 0 && count > 0 && (count == 1 || width_us < period_us);
}

/* Starts a train on channel ch: its first rising edge comes ACTUATION_DELAY_US from now and
 * is acked from the edge interrupt. The program is computed before taking the lock, which is
 * held only to install it. Single pulses too short for the edge interrupt are timed here and
 * acked at once (returns 1 with *t set); otherwise returns 0. */
static uint8_t start_train(uint8_t ch, uint16_t seq, uint32_t tag, uint32_t period_us,
                           uint32_t width_us, uint32_t count, uint64_t *t)
{
    channel_t *c = &channels[ch];
    channel_t program = {0};
    program.width = (uint64_t)width_us * HW_TICKS_PER_US;
    if (count == 1 && program.width <= HW_SHORT_PULSE_TICKS) {
        uint8_t s = hw_lock();
        c->busy = 0; /* the edge interrupt leaves this channel alone from now on */
        c->ack_pending = 0;
        sched_recompute_locked();
        hw_unlock(s);
        c->high = 1;
        *t = hw_short_pulse(ch, (uint16_t)program.width);
        c->high = 0;
        return 1;
    }
    program.busy = 1;
    program.next_level = 1;
    program.ack_pending = 1;
    program.seq = seq;
    program.tag = tag;
    program.remaining = count - 1u;
    program.period = (uint64_t)period_us * HW_TICKS_PER_US;
    program.rise = hw_now_ticks() + (uint64_t)ACTUATION_DELAY_US * HW_TICKS_PER_US;
    program.next = program.rise;
    uint8_t s = hw_lock();
    program.high = c->high; /* unchanged until the first edge */
    *c = program;
    sched_recompute_locked();
    hw_unlock(s);
    return 0;
}

static uint64_t set_level(uint8_t ch, uint8_t high)
{
    uint8_t s = hw_lock();
    uint64_t t = hw_pin_set_locked(ch, high);
    channels[ch].busy = 0;
    channels[ch].ack_pending = 0;
    channels[ch].high = high;
    sched_recompute_locked();
    hw_unlock(s);
    return t;
}

static void handle(const uint8_t *p, uint8_t len, uint64_t now)
{
    uint8_t type = p[0];
    uint8_t expected = h2d_payload_len(type);
    if (expected == 0) {
        refuse_frame(ERR_UNKNOWN_COMMAND);
        return;
    }
    if (len != expected || (type == H2D_SET_LEVEL && p[8] > 1)) {
        refuse_frame(ERR_BAD_FRAME);
        return;
    }
    uint16_t seq = get_u16(p + 1);
    uint32_t tag = get_u32(p + 3);
    uint8_t out[MAX_PAYLOAD_LEN];

    if (type == H2D_HELLO) {
        handshaken = get_u16(p + 7) == PROTOCOL_VERSION;
        watchdog_armed = handshaken;
        watchdog_fed_ticks = now;
        if (!handshaken) {
            all_off(); /* a host we cannot understand must not inherit outputs left on */
        }
        send_payload(out, d2h_hello(out, seq, PROTOCOL_VERSION, DEVICE_ID, FIRMWARE_VERSION,
                                    HW_CHANNELS));
        return;
    }
    if (!handshaken) {
        send_error(seq, ERR_VERSION_MISMATCH);
        return;
    }
    watchdog_armed = 1;
    watchdog_fed_ticks = now;

    uint8_t ch = p[7];
    uint64_t t;
    switch (type) {
    case H2D_HEARTBEAT:
        return;
    case H2D_QUERY_STATUS: {
        uint32_t levels = 0;
        uint8_t s = hw_lock();
        for (uint8_t i = 0; i < HW_CHANNELS; i++) {
            levels |= (uint32_t)channels[i].high << i;
        }
        hw_unlock(s);
        send_payload(out, d2h_status(out, seq, levels, now / HW_TICKS_PER_US));
        return;
    }
    case H2D_SYNC_REQUEST:
        send_payload(out, d2h_sync_reply(out, seq, now / HW_TICKS_PER_US));
        return;
    case H2D_ALL_OFF: {
        uint8_t s = hw_lock();
        t = all_off_locked();
        hw_unlock(s);
        break;
    }
    case H2D_SET_LEVEL:
        if (ch >= HW_CHANNELS) {
            send_error(seq, ERR_BAD_ARGUMENT);
            return;
        }
        t = set_level(ch, p[8]);
        break;
    case H2D_PULSE: {
        uint32_t width_us = get_u32(p + 8);
        if (ch >= HW_CHANNELS || !pulse_args_ok(width_us, width_us, 1)) {
            send_error(seq, ERR_BAD_ARGUMENT);
            return;
        }
        if (!start_train(ch, seq, tag, width_us, width_us, 1, &t)) {
            return; /* acked at the rising edge */
        }
        break;
    }
    default: { /* H2D_PULSE_TRAIN: the only type left */
        uint32_t period_us = get_u32(p + 8), width_us = get_u32(p + 12), count = get_u32(p + 16);
        if (ch >= HW_CHANNELS || !pulse_args_ok(period_us, width_us, count)) {
            send_error(seq, ERR_BAD_ARGUMENT);
            return;
        }
        if (!start_train(ch, seq, tag, period_us, width_us, count, &t)) {
            return;
        }
        break;
    }
    }
    send_ack(seq, tag, t);
}

/* Sends the acks the edge interrupt queued. */
static void send_queued_acks(void)
{
    while (ack_tail != ack_head) {
        uint8_t s = hw_lock(); /* also a compiler barrier: the entry is complete */
        ack_t a = acks[ack_tail];
        ack_tail = (uint8_t)((ack_tail + 1u) & (ACK_QUEUE_LEN - 1u));
        hw_unlock(s);
        send_ack(a.seq, a.tag, a.ticks);
    }
}

static void check_watchdog(void)
{
    if (!watchdog_armed || WATCHDOG_MS == 0) {
        return;
    }
    uint64_t now = hw_now_ticks();
    if (now - watchdog_fed_ticks >= (uint64_t)WATCHDOG_MS * 1000u * HW_TICKS_PER_US) {
        watchdog_armed = 0; /* rearmed by the next valid frame */
        all_off();
        send_error(device_seq++, ERR_WATCHDOG_EXPIRED);
    }
}

int main(void)
{
    hw_init();
    frame_rx_init(&rx);
    for (;;) {
        hw_poll();
        int16_t byte = hw_uart_read();
        if (byte >= 0) {
            const uint8_t *payload;
            uint8_t len;
            switch (frame_rx_push(&rx, (uint8_t)byte, &payload, &len)) {
            case RX_FRAME: handle(payload, len, hw_now_ticks()); break;
            case RX_BAD_CRC: refuse_frame(ERR_BAD_CRC); break;
            case RX_BAD_FRAME: refuse_frame(ERR_BAD_FRAME); break;
            case RX_NONE: break;
            }
        }
        send_queued_acks();
        check_watchdog();
    }
}
