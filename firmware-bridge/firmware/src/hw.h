/* The hardware layer: everything pin-, timer- and UART-specific lives behind these calls (one
 * implementation file per board: hw_avr.c for the ATmega328P). A Teensy port implements this
 * header and leaves reflex.c and codec.c untouched. */
#ifndef REFLEX_HW_H
#define REFLEX_HW_H

#include <stdint.h>

#ifdef __AVR_ATmega328P__
/* Timer1 runs at F_CPU / 8 = 2 MHz: 0.5 µs per tick. */
#define HW_TICKS_PER_US 2u
/* Output channels: 0..3 on PB0..PB3 (Arduino Uno/Nano D8..D11). */
#define HW_CHANNELS 4u
/* Single pulses up to this many ticks (80 µs) are timed by spinning in the main loop: the edge
 * interrupt needs ~70 µs after one edge before it can drive the next. */
#define HW_SHORT_PULSE_TICKS 160u
#endif

/* Sets up pins (all outputs low), the clock timer and the UART; enables interrupts. */
void hw_init(void);
/* Keeps the MCU's own reset watchdog fed (guards against a hung firmware). */
void hw_poll(void);

/* Interrupts off / restored: protects state shared with the edge interrupt. */
uint8_t hw_lock(void);
void hw_unlock(uint8_t saved);
/* Free-running device clock in ticks (HW_TICKS_PER_US per µs), extended to 64 bits. Call
 * with the lock held. */
uint64_t hw_now_ticks_locked(void);
uint64_t hw_now_ticks(void);
/* Drives output channel ch high (1) or low (0) and returns the clock tick at which the pin
 * changed. Lock held. */
uint64_t hw_pin_set_locked(uint8_t ch, uint8_t high);
/* One pulse of width_ticks (at most HW_SHORT_PULSE_TICKS) on ch, timed by spinning in the
 * caller; returns the tick of the rising edge. Call without the lock: interrupts stay enabled
 * except for the last few µs. */
uint64_t hw_short_pulse(uint8_t ch, uint16_t width_ticks);
/* Drives every output channel low at once; returns the tick of the change. Lock held. */
uint64_t hw_all_off_locked(void);
/* Arms the edge timer for the scheduler's next edge (sched_next_*); returns 1 when that edge
 * is so close that the caller (the edge interrupt) should handle it at once. Lock held. */
uint8_t hw_arm_locked(void);

/* Next received UART byte, or -1 when none is waiting. Never blocks. */
int16_t hw_uart_read(void);
/* Queues bytes for sending; waits only while the transmit buffer is full. */
void hw_uart_write(const uint8_t *bytes, uint8_t len);

/* The scheduler's next edge, maintained by reflex.c, read by the edge interrupt. */
extern uint8_t sched_next_valid;
extern uint8_t sched_next_channel;
extern uint8_t sched_next_level;
extern uint64_t sched_next_ticks;
/* Set by the edge interrupt before sched_edge_done_locked(): how many ticks after
 * sched_next_ticks the pin actually changed (0 unless the interrupt was held off). */
extern uint16_t sched_late_ticks;
/* Called by the edge interrupt right after it drove the scheduled edge; moves the channel to
 * its next edge and re-arms the timer. Returns hw_arm_locked()'s answer. Lock held. */
uint8_t sched_edge_done_locked(void);

#endif
