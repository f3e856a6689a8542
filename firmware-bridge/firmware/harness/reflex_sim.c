/* reflex-sim: runs the reflex firmware ELF under simavr in real time, with UART0 bridged to a
 * pseudo-terminal, and reports output pin edges in simulated time.
 *
 *   reflex-sim FIRMWARE.elf PTY_LINK [MAX_SECONDS]
 *
 * PTY_LINK becomes a symlink to the PTY's slave side (the host opens it as a serial port), so
 * several simulations can run at once. stdout, line by line:
 *   pty <slave path>              once, when the PTY is ready
 *   edge <pin> <0|1> <t_us>       PORTB pin <pin> changed at simulated time t_us
 *   rx <t_us>                     a frame delimiter (0x00) from the host entered the UART
 *   tx <t_us>                     the firmware sent a frame delimiter (printed before the
 *                                 frame's bytes reach the PTY, so a host that read a reply has
 *                                 every line printed before it in the pipe)
 * t_us is cycles / 16 (16 MHz), with three decimals. The simulation is throttled to the wall
 * clock (never faster: a lag is forgotten, not caught up), since the host side and the
 * firmware's watchdog are time-based. It stops after
 * MAX_SECONDS of simulated time (default 600), on SIGTERM/SIGINT, or when the firmware stops. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"

#define FREQ_HZ 16000000ull
#define OUT_SIZE 65536u
/* One byte's time on the line at the firmware's 500 000 baud (10 bits), in cycles. Input is fed
 * no faster than this, so simavr's input FIFO never fills; XON/XOFF are honoured all the same. */
#define BYTE_CYCLES (FREQ_HZ * 10u / 500000u)

static volatile sig_atomic_t stop;
static uint8_t out_buf[OUT_SIZE]; /* firmware -> host bytes not yet written to the PTY */
static size_t out_len;
static int uart_accepts = 1; /* XON/XOFF from simavr's UART input FIFO */
static avr_t *avr;

static double sim_us(void) { return (double)avr->cycle * 1e6 / (double)FREQ_HZ; }

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    if (out_len < OUT_SIZE) {
        out_buf[out_len++] = (uint8_t)value;
    }
    if ((uint8_t)value == 0) {
        printf("tx %.3f\n", sim_us());
    }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)value; (void)param;
    uart_accepts = 1;
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)value; (void)param;
    uart_accepts = 0;
}

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *param)
{
    static int level[8] = {0};
    int pin = (int)(intptr_t)param;
    (void)irq;
    if (level[pin] != (int)(value & 1)) {
        level[pin] = (int)(value & 1);
        printf("edge %d %d %.3f\n", pin, level[pin], sim_us());
    }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

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
    uint64_t start_ns = wall_ns(), next_io_cycle = 0, in_credit_cycle = 0;
    const uint64_t io_every_cycles = FREQ_HZ / 20000u; /* service the PTY every 50 µs */
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
        /* Host -> firmware, as fast as the UART's input FIFO accepts. */
        if (in_pos == in_len) {
            ssize_t n = read(master, in_buf, sizeof in_buf);
            in_len = n > 0 ? (size_t)n : 0;
            in_pos = 0;
        }
        if (in_credit_cycle + 4u * BYTE_CYCLES < avr->cycle) {
            in_credit_cycle = avr->cycle - 4u * BYTE_CYCLES; /* idle line: at most 4 bytes' burst */
        }
        while (in_pos < in_len && uart_accepts && in_credit_cycle + BYTE_CYCLES <= avr->cycle) {
            in_credit_cycle += BYTE_CYCLES;
            uint8_t byte = in_buf[in_pos++];
            if (byte == 0) {
                printf("rx %.3f\n", sim_us());
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
        /* Real time: sleep while the simulation is ahead of the wall clock. When it fell behind
         * (the process was descheduled), forget the lag instead of running faster to catch up:
         * simulated time must never pass faster than the host's, or the firmware's watchdog
         * would expire between heartbeats the host sent on time. */
        int64_t ahead_ns = (int64_t)(avr->cycle * 1000000000ull / FREQ_HZ) -
                           (int64_t)(wall_ns() - start_ns);
        if (ahead_ns > 100000) {
            struct timespec ts = {0, (long)ahead_ns};
            nanosleep(&ts, NULL);
        } else if (ahead_ns < -1000000) {
            start_ns += (uint64_t)(-ahead_ns - 1000000);
        }
    }
    unlink(argv[2]);
    close(slave);
    close(master);
    return 0;
}
