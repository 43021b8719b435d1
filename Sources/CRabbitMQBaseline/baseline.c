// The AMQP benchmark's baseline: the same work as the Swift client's, written directly against librabbitmq
// on one thread, as a careful C programmer would.
#include "baseline.h"

#include <stdlib.h>
#include <string.h>

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

static amqp_connection_state_t baseline_connect(const char *host, int port, int *status) {
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    *status = amqp_socket_open(socket, host, port);
    if (*status != AMQP_STATUS_OK) {
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_rpc_reply_t reply = amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        *status = AMQP_STATUS_CONNECTION_CLOSED;
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        *status = AMQP_STATUS_UNEXPECTED_STATE;
        amqp_destroy_connection(conn);
        return NULL;
    }
    return conn;
}

static void baseline_close(amqp_connection_state_t conn) {
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

int baseline_publish(const char *host, int port, const char *queue, int count, int window, int body_size) {
    int status = 0;
    amqp_connection_state_t conn = baseline_connect(host, port, &status);
    if (!conn) return status;
    amqp_confirm_select(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        baseline_close(conn);
        return AMQP_STATUS_UNEXPECTED_STATE;
    }
    char *body = malloc((size_t)body_size);
    memset(body, 'x', (size_t)body_size);
    amqp_bytes_t payload = {.len = (size_t)body_size, .bytes = body};
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/json");

    uint64_t published = 0, confirmed = 0;
    while (confirmed < (uint64_t)count) {
        while (published < (uint64_t)count && published - confirmed < (uint64_t)window) {
            status = amqp_basic_publish(conn, 1, amqp_cstring_bytes(""), amqp_cstring_bytes(queue), 0, 0, &props, payload);
            if (status != AMQP_STATUS_OK) goto done;
            published++;
        }
        amqp_frame_t frame;
        status = amqp_simple_wait_frame(conn, &frame);
        if (status != AMQP_STATUS_OK) goto done;
        if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = frame.payload.method.decoded;
            if (ack->multiple) {
                confirmed = ack->delivery_tag;
            } else {
                confirmed++;
            }
        } else if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            status = AMQP_STATUS_UNEXPECTED_STATE;
            goto done;
        }
        amqp_maybe_release_buffers(conn);
    }
    status = 0;
done:
    free(body);
    baseline_close(conn);
    return status;
}

int baseline_consume(const char *host, int port, const char *queue, int count, int prefetch) {
    int status = 0;
    amqp_connection_state_t conn = baseline_connect(host, port, &status);
    if (!conn) return status;
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        baseline_close(conn);
        return AMQP_STATUS_UNEXPECTED_STATE;
    }
    for (int received = 0; received < count; received++) {
        amqp_envelope_t envelope;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, NULL, 0);
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            status = reply.library_error ? reply.library_error : AMQP_STATUS_UNEXPECTED_STATE;
            break;
        }
        status = amqp_basic_ack(conn, 1, envelope.delivery_tag, 0);
        amqp_destroy_envelope(&envelope);
        if (status != AMQP_STATUS_OK) break;
    }
    baseline_close(conn);
    return status;
}
