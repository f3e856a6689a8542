/* Hardware layer for the ATmega328P at 16 MHz (Arduino Uno/Nano): the only file that touches
 * registers. Clock: Timer1 free-running at 2 MHz, extended to 64 bits by its overflow interrupt.
 * Edges: Timer1 compare A fires EDGE_LEAD_TICKS before an edge; the interrupt then spins on
 * TCNT1 to the exact tick and drives the pin, so pulse widths do not depend on interrupt
 * latency. UART0: 500 000 baud 8N1 (exact at 16 MHz), interrupt-driven ring buffers.
 * Channel map: channel n -> PBn, n = 0..3 (Arduino D8, D9, D10, D11). */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/wdt.h>

#include "hw.h"

#define BAUD 500000ul
/* Compare fires this many ticks (0.5 µs) before an edge: room for the interrupt's entry and
 * its 64-bit time check, measured under simavr (see README). */
#ifndef EDGE_LEAD_TICKS
#define EDGE_LEAD_TICKS 40u
#endif
/* An edge at most this far away is driven at once (the compare could not fire before it). */
#define IMMINENT_TICKS (EDGE_LEAD_TICKS + 8u)
/* A short pulse's final stretch, timed with interrupts off (longer than the UART interrupts). */
#define SHORT_PULSE_GUARD_TICKS 12u

/* Powers of two, at most 256 (8-bit indices). Replies are longer than requests, so a host that
 * streams requests at the full line rate builds a backlog here: 256 bytes absorb ~80 back-to-back
 * requests. */
#define RX_SIZE 256u
#define TX_SIZE 256u

static volatile uint32_t overflows;
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail;
static volatile uint8_t tx_buf[TX_SIZE];
static volatile uint8_t tx_head, tx_tail;

/* Keep the reset watchdog off after a watchdog reset (it stays on across resets). */
void wdt_off_early(void) __attribute__((naked, used, section(".init3")));
void wdt_off_early(void)
{
    MCUSR = 0;
    wdt_disable();
}

void hw_init(void)
{
    DDRB |= 0x0F; /* PB0..PB3 outputs, low */
    PORTB &= (uint8_t)~0x0F;

    TCCR1A = 0;
    TCNT1 = 0;
    TIFR1 = _BV(TOV1) | _BV(OCF1A);
    TIMSK1 = _BV(TOIE1) | _BV(OCIE1A);
    TCCR1B = _BV(CS11); /* clk/8: 2 MHz */

    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)(F_CPU / (8ul * BAUD) - 1ul);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);

    wdt_enable(WDTO_250MS);
    sei();
}

void hw_poll(void)
{
    wdt_reset();
}

/* The scheduler lock masks only the edge interrupt (the one other writer of PORTB and of the
 * scheduler's state): the UART interrupts keep running, so the receiver never overruns while
 * the main loop updates a program. Short sections that need the clock and a pin together
 * disable every interrupt themselves. */
uint8_t hw_lock(void)
{
    uint8_t was_on = TIMSK1 & _BV(OCIE1A);
    TIMSK1 &= (uint8_t)~_BV(OCIE1A);
    return was_on;
}

void hw_unlock(uint8_t saved)
{
    if (saved) {
        uint8_t sreg = SREG;
        cli();
        TIMSK1 |= _BV(OCIE1A);
        if (TIFR1 & _BV(OCF1A)) {
            /* A compare matched while masked: make a fresh match now that it is enabled (the
             * AVR would take the pending flag anyway; simavr does not). The interrupt re-arms
             * for the real edge if this one is early. */
            TIFR1 = _BV(OCF1A);
            OCR1A = (uint16_t)(TCNT1 + 2u);
        }
        SREG = sreg;
    }
}

/* The 64-bit tick count for a TCNT1 value read just before (lock held). */
static uint64_t extend_locked(uint16_t lo)
{
    uint32_t hi = overflows;
    if ((TIFR1 & _BV(TOV1)) && lo < 0x8000u) {
        hi++; /* overflowed, interrupt not yet run */
    }
    /* Assembled from 16-bit words: avr-gcc makes `(uint64_t)hi << 16` a 16-step libgcc loop. */
    union {
        uint64_t ticks;
        uint16_t words[4];
    } t;
    t.words[0] = lo;
    t.words[1] = (uint16_t)hi;
    t.words[2] = (uint16_t)(hi >> 16);
    t.words[3] = 0;
    return t.ticks;
}

uint64_t hw_now_ticks_locked(void)
{
    uint8_t sreg = SREG;
    cli();
    uint64_t t = extend_locked(TCNT1);
    SREG = sreg;
    return t;
}

uint64_t hw_now_ticks(void)
{
    return hw_now_ticks_locked();
}

/* PORTB with channel ch's bit set to high. */
static inline uint8_t port_with(uint8_t ch, uint8_t high)
{
    static const uint8_t masks[HW_CHANNELS] = {_BV(PB0), _BV(PB1), _BV(PB2), _BV(PB3)};
    uint8_t mask = masks[ch];
    return high ? (uint8_t)(PORTB | mask) : (uint8_t)(PORTB & (uint8_t)~mask);
}

/* Both the main path here and the edge interrupt read TCNT1 immediately before the single
 * `out` to PORTB, so the read-to-pin delay is the same for rising and falling edges and cancels
 * out of pulse widths; the returned time is within a cycle of the pin change. */
uint64_t hw_pin_set_locked(uint8_t ch, uint8_t high)
{
    uint8_t sreg = SREG;
    cli();
    uint8_t port = port_with(ch, high);
    uint16_t lo = TCNT1;
    PORTB = port;
    uint64_t t = extend_locked(lo);
    SREG = sreg;
    return t;
}

uint64_t hw_short_pulse(uint8_t ch, uint16_t width_ticks)
{
    uint8_t sreg = SREG;
    cli();
    uint8_t port = port_with(ch, 1);
    uint16_t lo = TCNT1;
    PORTB = port;
    uint64_t t = extend_locked(lo);
    SREG = sreg;
    uint16_t at = (uint16_t)(lo + width_ticks);
    /* Interrupts stay on (the UART keeps receiving) until the last few µs, so an interrupt can
     * only delay the falling edge by running into that final stretch. */
    while ((int16_t)(TCNT1 - at) < -(int16_t)SHORT_PULSE_GUARD_TICKS) {
    }
    cli();
    port = port_with(ch, 0);
    while ((int16_t)(TCNT1 - at) < 0) {
    }
    PORTB = port;
    SREG = sreg;
    return t;
}

uint64_t hw_all_off_locked(void)
{
    uint8_t sreg = SREG;
    cli();
    uint8_t port = (uint8_t)(PORTB & (uint8_t)~0x0Fu);
    uint16_t lo = TCNT1;
    PORTB = port;
    uint64_t t = extend_locked(lo);
    SREG = sreg;
    return t;
}

uint8_t hw_arm_locked(void)
{
    uint8_t sreg = SREG;
    cli();
    int64_t ahead = (int64_t)(sched_next_ticks - extend_locked(TCNT1));
    uint8_t imminent = ahead <= (int64_t)IMMINENT_TICKS;
    uint16_t target = (uint16_t)(sched_next_ticks - EDGE_LEAD_TICKS);
    /* The 64-bit arithmetic took a few µs: if the compare point has come meanwhile (or is
     * about to), fire in a few ticks instead; the interrupt then spins to the edge. */
    if (imminent || (ahead < 0x8000 && (int16_t)(target - TCNT1) < 4)) {
        target = (uint16_t)(TCNT1 + 4u);
    }
    TIFR1 = _BV(OCF1A);
    OCR1A = target;
    SREG = sreg;
    return imminent;
}

ISR(TIMER1_OVF_vect)
{
    overflows++;
}

ISR(TIMER1_COMPA_vect)
{
    for (;;) {
        if (!sched_next_valid) {
            return;
        }
        int64_t ahead = (int64_t)(sched_next_ticks - hw_now_ticks_locked());
        if (ahead > (int64_t)IMMINENT_TICKS && !hw_arm_locked()) {
            return; /* early (a later timer epoch, or a fire-at-once arm): re-armed for it */
        }
        uint16_t at = (uint16_t)sched_next_ticks;
        uint8_t port = port_with(sched_next_channel, sched_next_level);
        uint16_t now;
        do {
            now = TCNT1;
        } while ((int16_t)(now - at) < 0);
        PORTB = port;
        sched_late_ticks = (uint16_t)(now - at); /* 0 unless the interrupt came late */
        /* The bookkeeping (64-bit, ~40 µs) runs with interrupts on, the edge interrupt masked,
         * so the UART is never held off longer than the spin above. */
        TIMSK1 &= (uint8_t)~_BV(OCIE1A);
        sei();
        uint8_t again = sched_edge_done_locked();
        cli();
        TIMSK1 |= _BV(OCIE1A);
        if (TIFR1 & _BV(OCF1A)) {
            TIFR1 = _BV(OCF1A); /* matched while masked: handle it here */
            again = 1;
        }
        if (!again) {
            return;
        }
    }
}

ISR(USART_RX_vect)
{
    uint8_t byte = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1u) & (RX_SIZE - 1u));
    if (next != rx_tail) { /* full: drop; the frame's CRC or COBS then fails */
        rx_buf[rx_head] = byte;
        rx_head = next;
    }
}

ISR(USART_UDRE_vect)
{
    if (tx_tail == tx_head) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1u) & (TX_SIZE - 1u));
}

int16_t hw_uart_read(void)
{
    if (rx_tail == rx_head) {
        return -1;
    }
    uint8_t byte = rx_buf[rx_tail];
    rx_tail = (uint8_t)((rx_tail + 1u) & (RX_SIZE - 1u));
    return byte;
}

void hw_uart_write(const uint8_t *bytes, uint8_t len)
{
    for (uint8_t i = 0; i < len; i++) {
        uint8_t next = (uint8_t)((tx_head + 1u) & (TX_SIZE - 1u));
        while (next == tx_tail) {
            wdt_reset(); /* buffer full: wait for the UART */
        }
        tx_buf[tx_head] = bytes[i];
        tx_head = next;
        UCSR0B |= _BV(UDRIE0);
    }
}
