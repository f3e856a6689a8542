/* reflex-sim: runs the reflex firmware ELF under simavr in real time, with UART0 bridged to a
 * pseudo-terminal, and reports output pin edges in simulated time.
 *
 *   reflex-sim FIRMWARE.elf PTY_LINK [MAX_SECONDS]
 *
 * PTY_LINK becomes a symlink to the PTY's slave side (the host opens it as a serial port), so
 * several simulations can run at once. stdout, line by line:
 *   pty <slave path>                   once, when the PTY is ready
 *   edge <pin> <0|1> <t_us> <host_ns>  PORTB pin <pin> changed at simulated time t_us
 *   rx <t_us> <host_ns>                a frame delimiter (0x00) from the host entered the UART
 *   tx <t_us> <host_ns>                the firmware sent a frame delimiter (printed before the
 *                                      frame's bytes reach the PTY, so a host that read a reply
 *                                      has every line printed before it in the pipe)
 *   lag <ns> <t_us> <host_ns>          the harness was held off so long that it gave up catching
 *                                      up: simulated time stood still for <ns> of host time at
 *                                      t_us, which is host_ns on the host clock from now on
 * t_us is cycles / 16 (16 MHz), with three decimals. host_ns is the same moment on the host's
 * CLOCK_MONOTONIC: the simulated world runs in step with the host clock, cycle 0 at the
 * harness's start, so host_ns is the truth that host-side clock sync is checked against.
 *
 * Real time: the simulation never runs ahead of the host clock by more than a few µs. When it
 * falls behind (the process was descheduled) it catches up at full speed, so the device clock
 * keeps in step with the host like a crystal does; bytes from the host are fed no earlier than
 * the simulated moment they were read from the PTY, so nothing reaches the firmware before it
 * was sent. A hold-off longer than MAX_CATCHUP_NS is not caught up (the firmware's watchdog
 * would see the host's heartbeats bunched): simulated time stands still for it, and a `lag`
 * line says so. To keep up on a busy machine it asks for SCHED_FIFO priority 50 (below the priorities
 * of reflex's own loop threads, so it never preempts the host under test); where that is not
 * allowed it runs at normal priority. It stops after MAX_SECONDS of simulated time (default 600), on SIGTERM/SIGINT,
 * or when the firmware stops. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_timer.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_interrupts.h"
#include "sim_io.h"
#include "sim_regbit.h"

#define FREQ_HZ 16000000ull
#define OUT_SIZE 65536u
/* One byte's time on the line at the firmware's 500 000 baud (10 bits), in cycles. Input is fed
 * no faster than this, so simavr's input FIFO never fills; XON/XOFF are honoured all the same. */
#define BYTE_CYCLES (FREQ_HZ * 10u / 500000u)
/* Longest hold-off caught up; a longer one is skipped (see the header). Below the firmware's
 * 50 ms watchdog minus the host's heartbeat interval. */
#define MAX_CATCHUP_NS 20000000ll
/* The simulation sleeps when it is this far ahead of the host clock. */
#define MAX_AHEAD_NS 10000ll

static volatile sig_atomic_t stop;
static uint8_t out_buf[OUT_SIZE]; /* firmware -> host bytes not yet written to the PTY */
static size_t out_len;
static int uart_accepts = 1; /* XON/XOFF from simavr's UART input FIFO */
static avr_t *avr;
/* Host time (CLOCK_MONOTONIC ns) of cycle 0; moved forward by every skipped hold-off. */
static uint64_t origin_ns;

static double sim_us(void) { return (double)avr->cycle * 1e6 / (double)FREQ_HZ; }

/* The current simulated moment on the host clock. */
static uint64_t sim_host_ns(void) { return origin_ns + avr->cycle * 1000000000ull / FREQ_HZ; }

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    if (out_len < OUT_SIZE) {
        out_buf[out_len++] = (uint8_t)value;
    }
    if ((uint8_t)value == 0) {
        printf("tx %.3f %llu\n", sim_us(), (unsigned long long)sim_host_ns());
    }
}

/* simavr raises XON with 1 while its input FIFO has room, XOFF with 1 when it is full (and with
 * 0 when it is no longer). */
static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    if (value) {
        uart_accepts = 1;
    }
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    if (value) {
        uart_accepts = 0;
    }
}

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *param)
{
    static int level[8] = {0};
    int pin = (int)(intptr_t)param;
    (void)irq;
    if (level[pin] != (int)(value & 1)) {
        level[pin] = (int)(value & 1);
        printf("edge %d %d %.3f %llu\n", pin, level[pin], sim_us(),
               (unsigned long long)sim_host_ns());
    }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

/* TIFR1 as the AVR has it: writing 1 to a flag clears that flag, and only that one. simavr 1.6
 * (Debian's) clears every raised Timer1 flag on any write to TIFR1, so the firmware's clearing
 * of a stale compare flag (OCF1A) also swallowed a pending overflow (TOV1): its 64-bit clock
 * then fell 32.8 ms behind for good. Fixed upstream by simavr commit 7e3e150 ("timer: Allow
 * clearing of the interupts"); this is the same rule. */
static void tifr1_write(avr_t *a, avr_io_addr_t addr, uint8_t v, void *param)
{
    avr_timer_t *t = (avr_timer_t *)param;
    (void)addr;
    if (avr_regbit_from_value(a, t->overflow.raised, v)) {
        avr_clear_interrupt(a, &t->overflow);
    }
    if (avr_regbit_from_value(a, t->icr.raised, v)) {
        avr_clear_interrupt(a, &t->icr);
    }
    for (int i = 0; i < AVR_TIMER_COMP_COUNT; i++) {
        if (t->comp[i].interrupt.raised.reg &&
            avr_regbit_from_value(a, t->comp[i].interrupt.raised, v)) {
            avr_clear_interrupt(a, &t->comp[i].interrupt);
        }
    }
}

/* Installs tifr1_write in place of simavr's handler for TIFR1 (data address 0x36 on the
 * ATmega328P), which belongs to Timer1's model. */
static int fix_tifr1(void)
{
    const avr_io_addr_t tifr1 = 0x36;
    avr_io_addr_t i = AVR_DATA_TO_IO(tifr1);
    avr_timer_t *t = (avr_timer_t *)avr->io[i].w.param;
    if (!avr->io[i].w.c || !t || t->name != '1' || t->overflow.raised.reg != tifr1) {
        return -1;
    }
    avr->io[i].w.c = tifr1_write;
    return 0;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FIRMWARE.elf PTY_LINK [MAX_SECONDS]\n", argv[0]);
        return 2;
    }
    double max_s = argc > 3 ? atof(argv[3]) : 600.0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sched_param prio = {.sched_priority = 50};
    if (sched_setscheduler(0, SCHED_FIFO, &prio) != 0) {
        fprintf(stderr, "reflex-sim: no real-time priority (%s): running at normal priority\n",
                strerror(errno));
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(argv[1], &fw) != 0) {
        fprintf(stderr, "reflex-sim: cannot read firmware %s\n", argv[1]);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "reflex-sim: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    avr->frequency = FREQ_HZ;
    if (fix_tifr1() != 0) {
        fprintf(stderr, "reflex-sim: this simavr's Timer1 flag register is not as expected\n");
        return 1;
    }

    /* The PTY: raw, non-blocking master; the harness keeps a slave fd open so reads on the
     * master never fail with EIO while no host is connected. */
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        perror("reflex-sim: posix_openpt");
        return 1;
    }
    const char *slave_path = ptsname(master);
    int slave = open(slave_path, O_RDWR | O_NOCTTY);
    struct termios tio;
    if (slave < 0 || tcgetattr(slave, &tio) != 0) {
        perror("reflex-sim: pty slave");
        return 1;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    unlink(argv[2]);
    if (symlink(slave_path, argv[2]) != 0) {
        perror("reflex-sim: symlink");
        return 1;
    }

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            on_uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
                            on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            on_xoff, NULL);
    avr_irq_t *uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    for (int pin = 0; pin < 8; pin++) {
        avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), pin), on_pin,
                                (void *)(intptr_t)pin);
    }
    printf("pty %s\n", slave_path);

    uint8_t in_buf[256];
    size_t in_len = 0, in_pos = 0;
    uint64_t in_read_ns = 0; /* host time the bytes in in_buf were read from the PTY */
    uint64_t next_io_cycle = 0, in_credit_cycle = 0;
    const uint64_t io_every_cycles = FREQ_HZ / 20000u; /* service the PTY every 50 µs */
    origin_ns = wall_ns();
    while (!stop) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "reflex-sim: firmware stopped (state %d)\n", state);
            break;
        }
        if (avr->cycle < next_io_cycle) {
            continue;
        }
        next_io_cycle = avr->cycle + io_every_cycles;
        if (sim_us() > max_s * 1e6) {
            break;
        }
        /* Host -> firmware, as fast as the UART's input FIFO accepts, never before the
         * simulated moment the bytes were read from the PTY. */
        if (in_pos == in_len) {
            ssize_t n = read(master, in_buf, sizeof in_buf);
            in_len = n > 0 ? (size_t)n : 0;
            in_pos = 0;
            in_read_ns = wall_ns();
        }
        if (in_credit_cycle + 4u * BYTE_CYCLES < avr->cycle) {
            in_credit_cycle = avr->cycle - 4u * BYTE_CYCLES; /* idle line: at most 4 bytes' burst */
        }
        while (in_pos < in_len && uart_accepts && in_credit_cycle + BYTE_CYCLES <= avr->cycle &&
               sim_host_ns() >= in_read_ns) {
            in_credit_cycle += BYTE_CYCLES;
            uint8_t byte = in_buf[in_pos++];
            if (byte == 0) {
                printf("rx %.3f %llu\n", sim_us(), (unsigned long long)sim_host_ns());
            }
            avr_raise_irq(uart_in, byte);
        }
        /* Firmware -> host. */
        if (out_len > 0) {
            ssize_t n = write(master, out_buf, out_len);
            if (n > 0) {
                memmove(out_buf, out_buf + n, out_len - (size_t)n);
                out_len -= (size_t)n;
            }
        }
        /* In step with the host clock: sleep while ahead, run flat out while behind, and skip a
         * hold-off too long to catch up (see the header). */
        int64_t ahead_ns = (int64_t)sim_host_ns() - (int64_t)wall_ns();
        if (ahead_ns > MAX_AHEAD_NS) {
            struct timespec ts = {0, (long)ahead_ns};
            nanosleep(&ts, NULL);
        } else if (ahead_ns < -MAX_CATCHUP_NS) {
            origin_ns += (uint64_t)(-ahead_ns);
            printf("lag %lld %.3f %llu\n", (long long)-ahead_ns, sim_us(),
                   (unsigned long long)sim_host_ns());
        }
    }
    unlink(argv[2]);
    close(slave);
    close(master);
    return 0;
}
