#ifndef PROCESSFLEET_RABBITMQ_BASELINE_H
#define PROCESSFLEET_RABBITMQ_BASELINE_H

#include <stdint.h>

/// Publishes `count` persistent messages of `body_size` bytes to `queue` through the default exchange, in
/// confirm mode with at most `window` unconfirmed messages. Returns 0, or a negative librabbitmq status.
int baseline_publish(const char *host, int port, const char *queue, int count, int window, int body_size);

/// Consumes `count` messages from `queue` with the given prefetch, acknowledging each one.
/// Returns 0, or a negative librabbitmq status.
int baseline_consume(const char *host, int port, const char *queue, int count, int prefetch);

#endif
