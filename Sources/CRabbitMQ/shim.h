#ifndef PROCESSFLEET_CRABBITMQ_SHIM_H
#define PROCESSFLEET_CRABBITMQ_SHIM_H

// librabbitmq moved its headers under rabbitmq-c/ in 0.12; Debian 12 ships 0.11 with them at the top level.
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif

// amqp_login_with_properties is variadic (the SASL arguments), which Swift cannot call.
static inline amqp_rpc_reply_t fleet_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                      int channel_max, int frame_max, int heartbeat,
                                                      const amqp_table_t *properties,
                                                      const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

static inline amqp_rpc_reply_t fleet_amqp_login_external(amqp_connection_state_t state, const char *vhost,
                                                         int channel_max, int frame_max, int heartbeat,
                                                         const amqp_table_t *properties,
                                                         const char *identity) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, properties,
                                      AMQP_SASL_METHOD_EXTERNAL, identity);
}

// Method ids are macros with casts; spelled here as constants Swift imports reliably.
static const amqp_method_number_t fleet_basic_ack = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t fleet_basic_nack = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t fleet_basic_return = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t fleet_basic_deliver = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t fleet_basic_cancel = AMQP_BASIC_CANCEL_METHOD;
static const amqp_method_number_t fleet_channel_close = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t fleet_connection_close = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t fleet_connection_blocked = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t fleet_connection_unblocked = AMQP_CONNECTION_UNBLOCKED_METHOD;

#endif
