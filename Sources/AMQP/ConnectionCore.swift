internal import CRabbitMQ
import Foundation
import Logging
import Synchronization

/// What async callers can read of a connection without going through its thread.
final class ConnectionSharedState: Sendable {
    /// Bumped on every recovery: deliveries of an older generation belong to channels that no longer exist.
    let generation = Atomic<UInt64>(0)
    let connected = Atomic<Bool>(false)
    let blocked = Atomic<Bool>(false)
    let recoveries = Atomic<Int>(0)
}

/// The state of one librabbitmq connection, confined to its `ConnectionThread`.
///
/// Everything here runs on that one thread: the jobs async callers submit, the frames the broker sends, the
/// heartbeats, and recovery after a lost connection. Nothing else may touch it, which is why it is
/// `@unchecked Sendable`: it crosses into the thread once, at start.
final class ConnectionCore: @unchecked Sendable {
    enum Status {
        case connected
        case recovering(attempt: Int, notBefore: ContinuousClock.Instant)
        case closed(AMQPError)
    }

    let configuration: AMQPConfiguration
    let logger: Logger
    let thread: ConnectionThread
    let shared: ConnectionSharedState
    private(set) var status: Status = .closed(AMQPError(.connectionLost, operation: "connect", detail: "not connected yet"))
    private var state: amqp_connection_state_t?
    private var exitRequested = false

    private var nextChannel: UInt16 = 1
    private var rpcChannel: UInt16?
    private var channelOwners: [UInt16: ChannelOwner] = [:]
    private var publishers: [ObjectIdentifier: PublisherState] = [:]
    private var consumers: [ObjectIdentifier: ConsumerState] = [:]
    private var pendingContent: [UInt16: PendingContent] = [:]
    private var recorded = RecordedTopology()
    private var acknowledgements: [UInt16: AcknowledgementBuffer] = [:]

    enum ChannelOwner {
        case rpc
        case publisher(PublisherState)
        case consumer(ConsumerState)
    }

    init(configuration: AMQPConfiguration, logger: Logger, thread: ConnectionThread, shared: ConnectionSharedState) {
        self.configuration = configuration
        self.logger = logger
        self.thread = thread
        self.shared = shared
    }

    var isConnected: Bool {
        if case .connected = status { return true }
        return false
    }

    var generation: UInt64 { shared.generation.load(ordering: .relaxed) }

    // MARK: - The thread's loop

    /// Runs until the connection is closed by the application or fails for good.
    func run() {
        while !exitRequested {
            let jobs = thread.takeJobs()
            for job in jobs { job(self) }
            flushAcknowledgements()
            if exitRequested { break }
            switch status {
            case .connected:
                readAvailableFrames()
                if jobs.isEmpty, isConnected { sleep(until: nil) }
            case .recovering(let attempt, let notBefore):
                if ContinuousClock.now >= notBefore {
                    attemptRecovery(attempt: attempt)
                } else {
                    sleep(until: notBefore)
                }
            case .closed:
                sleep(until: nil)
            }
        }
        for job in thread.stopAccepting() { job(self) }
    }

    /// Sleeps until the socket is readable, a job arrives, the deadline passes, or a heartbeat is due.
    private func sleep(until deadline: ContinuousClock.Instant?) {
        var socketFD: Int32 = -1
        if let state, isConnected {
            if amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 { return }
            socketFD = amqp_get_sockfd(state)
        }
        guard thread.prepareToSleep() else {
            thread.didWake()
            return
        }
        var timeoutMilliseconds: Int32 = 1000
        if configuration.heartbeat > 0 {
            timeoutMilliseconds = min(timeoutMilliseconds, Int32(configuration.heartbeat * 1000 / 2))
        }
        if let deadline {
            let remaining = ContinuousClock.now.duration(to: deadline)
            let milliseconds = max(0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
            timeoutMilliseconds = min(timeoutMilliseconds, Int32(clamping: milliseconds))
        }
        var fds = [pollfd(fd: thread.wakeReadFD, events: Int16(POLLIN), revents: 0)]
        if socketFD >= 0 { fds.append(pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0)) }
        _ = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
        thread.didWake()
    }

    /// Reads and handles every frame that can be had without blocking (bounded, so jobs are not starved).
    /// Also lets librabbitmq send a heartbeat when one is due and notice a broker that stopped sending them.
    private func readAvailableFrames() {
        var handled = 0
        while let state, isConnected, handled < 1024 {
            var frame = amqp_frame_t()
            var zero = timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(state, &frame, &zero)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return }
            guard status == AMQP_STATUS_OK.rawValue else {
                connectionLost(libraryError(status, operation: "read from broker"))
                return
            }
            handle(frame)
            handled += 1
            if let current = self.state { amqp_maybe_release_buffers_on_channel(current, frame.channel) }
        }
    }

    // MARK: - Opening, recovery, closing

    /// Opens the socket and logs in. On failure nothing is left open.
    func open() -> Result<Void, AMQPError> {
        let endpoint = "\(configuration.host):\(configuration.port)"
        guard let state = amqp_new_connection() else {
            return .failure(AMQPError(.libraryError, operation: "connect \(endpoint)", detail: "out of memory"))
        }
        func fail(_ error: AMQPError) -> Result<Void, AMQPError> {
            amqp_destroy_connection(state)
            return .failure(error)
        }
        let socket: OpaquePointer?
        if let tls = configuration.tls {
            socket = amqp_ssl_socket_new(state)
            guard let socket else { return fail(AMQPError(.tlsFailure, operation: "connect \(endpoint)", detail: "TLS socket unavailable")) }
            if let ca = tls.caCertificateFile {
                let status = amqp_ssl_socket_set_cacert(socket, ca)
                guard status == AMQP_STATUS_OK.rawValue else {
                    return fail(AMQPError(.tlsFailure, operation: "load CA file \(ca)", detail: Self.statusText(status)))
                }
            }
            if let certificate = tls.certificateFile, let key = tls.keyFile {
                let status = amqp_ssl_socket_set_key(socket, certificate, key)
                guard status == AMQP_STATUS_OK.rawValue else {
                    return fail(AMQPError(.tlsFailure, operation: "load client certificate \(certificate)", detail: Self.statusText(status)))
                }
            }
            amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
            amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { return fail(AMQPError(.libraryError, operation: "connect \(endpoint)", detail: "no socket")) }

        var connectTimeout = Self.makeTimeval(configuration.connectTimeout)
        let openStatus = amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &connectTimeout)
        guard openStatus == AMQP_STATUS_OK.rawValue else {
            let code: AMQPError.Code
            switch openStatus {
            case AMQP_STATUS_TIMEOUT.rawValue: code = .timeout
            case AMQP_STATUS_SSL_ERROR.rawValue, AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue,
                 AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue, AMQP_STATUS_SSL_CONNECTION_FAILED.rawValue:
                code = .tlsFailure
            default: code = .connectionRefused
            }
            return fail(AMQPError(code, operation: "connect \(endpoint)", detail: Self.statusText(openStatus)))
        }
        var handshakeTimeout = Self.makeTimeval(configuration.connectTimeout)
        amqp_set_handshake_timeout(state, &handshakeTimeout)
        var rpcTimeout = Self.makeTimeval(configuration.rpcTimeout)
        amqp_set_rpc_timeout(state, &rpcTimeout)

        let arena = CArena()
        var capabilities: AMQPTable = [
            "publisher_confirms": true, "consumer_cancel_notify": true, "connection.blocked": true,
            "basic.nack": true, "authentication_failure_close": true, "exchange_exchange_bindings": true,
        ]
        capabilities["per_consumer_qos"] = true
        var clientProperties: AMQPTable = ["product": "ProcessFleet", "capabilities": .table(capabilities)]
        if let name = configuration.connectionName { clientProperties["connection_name"] = .string(name) }
        var properties = arena.table(clientProperties)
        let reply = fleet_amqp_login_plain(
            state, configuration.virtualHost, Int32(configuration.channelMax), Int32(configuration.frameMax),
            Int32(configuration.heartbeat), &properties, configuration.user, configuration.password)
        if let error = replyError(reply, operation: "log in to \(endpoint) vhost \(configuration.virtualHost)", channel: 0, state: state, duringLogin: true) {
            return fail(error)
        }
        self.state = state
        nextChannel = 1
        rpcChannel = nil
        acknowledgements = [:]
        channelOwners = [:]
        pendingContent = [:]
        status = .connected
        shared.connected.store(true, ordering: .relaxed)
        shared.blocked.store(false, ordering: .relaxed)
        return .success(())
    }

    /// Tries once to reconnect; on success declares the recorded topology again and resumes consumers.
    private func attemptRecovery(attempt: Int) {
        guard let policy = configuration.recovery else { return }
        logger.info("amqp: reconnecting", metadata: ["attempt": "\(attempt)", "broker": "\(configuration)"])
        switch open() {
        case .failure(let error):
            if let maximum = policy.maximumAttempts, attempt >= maximum {
                logger.error("amqp: giving up reconnecting", metadata: ["error": "\(error)"])
                closeForGood(error)
            } else {
                status = .recovering(attempt: attempt + 1, notBefore: .now + policy.delay(beforeAttempt: attempt + 1))
            }
        case .success:
            shared.generation.add(1, ordering: .relaxed)
            for declaration in recorded.replay {
                if case .failure(let error) = redeclare(declaration) {
                    logger.error("amqp: re-declaring topology failed", metadata: ["error": "\(error)"])
                }
            }
            for consumer in consumers.values {
                if case .failure(let error) = startConsuming(consumer) {
                    finishConsumer(consumer, error: error)
                }
            }
            shared.recoveries.add(1, ordering: .relaxed)
            logger.info("amqp: connection recovered", metadata: ["broker": "\(configuration)"])
        }
    }

    /// The connection is gone: fail what waits on it, then recover or close for good.
    func connectionLost(_ error: AMQPError) {
        guard isConnected else { return }
        if let state {
            amqp_destroy_connection(state)
            self.state = nil
        }
        shared.connected.store(false, ordering: .relaxed)
        shared.generation.add(1, ordering: .relaxed)
        logger.warning("amqp: connection lost", metadata: ["error": "\(error)"])
        for publisher in publishers.values { publisher.connectionLost(error, failingBacklog: true) }
        for consumer in consumers.values { consumer.channel = nil }
        channelOwners = [:]
        pendingContent = [:]
        acknowledgements = [:]
        rpcChannel = nil
        if let policy = configuration.recovery, !exitRequested {
            status = .recovering(attempt: 1, notBefore: .now + policy.delay(beforeAttempt: 1))
        } else {
            closeForGood(error)
        }
    }

    private func closeForGood(_ error: AMQPError) {
        status = .closed(error)
        shared.connected.store(false, ordering: .relaxed)
        for publisher in publishers.values { publisher.connectionLost(error, failingBacklog: true) }
        for consumer in consumers.values { finishConsumer(consumer, error: error) }
    }

    /// Closes politely: consumers end, the broker is told, the thread exits.
    func closeByApplication() {
        let error = AMQPError(.closedByApplication, operation: "close")
        flushAcknowledgements()
        if let state, isConnected {
            _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS)
            amqp_destroy_connection(state)
        } else if let state {
            amqp_destroy_connection(state)
        }
        state = nil
        status = .closed(error)
        shared.connected.store(false, ordering: .relaxed)
        for publisher in publishers.values { publisher.connectionLost(error, failingBacklog: true) }
        for consumer in consumers.values { finishConsumer(consumer, error: nil) }
        publishers = [:]
        consumers = [:]
        exitRequested = true
    }

    /// The error a job gets when the connection is not usable now.
    var unavailableError: AMQPError {
        switch status {
        case .connected: return AMQPError(.connectionLost, operation: "use connection")
        case .recovering: return AMQPError(.connectionLost, operation: "use connection", detail: "reconnecting")
        case .closed(let error): return error
        }
    }

    // MARK: - Channels and synchronous methods

    private func openChannel(owner: ChannelOwner, operation: String) -> Result<UInt16, AMQPError> {
        guard let state, isConnected else { return .failure(unavailableError) }
        let channel = nextChannel
        nextChannel = nextChannel == UInt16.max ? 1 : nextChannel + 1
        _ = amqp_channel_open(state, channel)
        if let error = rpcError(operation: operation, channel: channel) { return .failure(error) }
        channelOwners[channel] = owner
        return .success(channel)
    }

    private func closeChannel(_ channel: UInt16) {
        flushAcknowledgements(channel: channel)
        acknowledgements[channel] = nil
        channelOwners[channel] = nil
        pendingContent[channel] = nil
        if rpcChannel == channel { rpcChannel = nil }
        guard let state, isConnected else { return }
        _ = amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
        _ = rpcError(operation: "channel.close", channel: channel)
    }

    /// Runs a synchronous method on the channel kept for them, opening it when needed.
    func rpc<T>(_ operation: String, _ call: (amqp_connection_state_t, UInt16) -> T?) -> Result<T, AMQPError> {
        guard let state, isConnected else { return .failure(unavailableError) }
        let channel: UInt16
        if let existing = rpcChannel {
            channel = existing
        } else {
            switch openChannel(owner: .rpc, operation: operation) {
            case .success(let opened): channel = opened
            case .failure(let error): return .failure(error)
            }
            rpcChannel = channel
        }
        let result = call(state, channel)
        if let error = rpcError(operation: operation, channel: channel) { return .failure(error) }
        guard let result else { return .failure(AMQPError(.protocolError, operation: operation, detail: "no reply")) }
        return .success(result)
    }

    /// Checks the reply of the last synchronous method; handles a channel or connection the broker closed.
    private func rpcError(operation: String, channel: UInt16) -> AMQPError? {
        guard let state else { return unavailableError }
        return replyError(amqp_get_rpc_reply(state), operation: operation, channel: channel, state: state, duringLogin: false)
    }

    private func replyError(_ reply: amqp_rpc_reply_t, operation: String, channel: UInt16,
                            state: amqp_connection_state_t, duringLogin: Bool) -> AMQPError? {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return nil
        case AMQP_RESPONSE_NONE:
            return AMQPError(.protocolError, operation: operation, detail: "no reply")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let status = reply.library_error
            if duringLogin {
                if status == AMQP_STATUS_CONNECTION_CLOSED.rawValue || status == AMQP_STATUS_SOCKET_CLOSED.rawValue {
                    return AMQPError(.authenticationFailed, operation: operation, detail: "the broker closed the connection during login")
                }
                if status == AMQP_STATUS_TIMEOUT.rawValue {
                    return AMQPError(.timeout, operation: operation, detail: Self.statusText(status))
                }
                if status == AMQP_STATUS_SSL_ERROR.rawValue { return AMQPError(.tlsFailure, operation: operation, detail: Self.statusText(status)) }
                return AMQPError(.libraryError, operation: operation, detail: Self.statusText(status))
            }
            let error = libraryError(status, operation: operation)
            connectionLost(error)
            return error
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == fleet_connection_close, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                var ok = amqp_connection_close_ok_t()
                _ = amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
                var error = AMQPError.fromReply(code: close.reply_code, text: close.reply_text.string, operation: operation, onConnection: true)
                if duringLogin && close.reply_code == 403 { error.code = .authenticationFailed }
                if !duringLogin { connectionLost(error) }
                return error
            }
            if reply.reply.id == fleet_channel_close, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                var ok = amqp_channel_close_ok_t()
                _ = amqp_send_method(state, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
                channelClosedByBroker(channel)
                return AMQPError.fromReply(code: close.reply_code, text: close.reply_text.string, operation: operation, onConnection: false)
            }
            return AMQPError(.protocolError, operation: operation, detail: "unexpected method \(reply.reply.id)")
        default:
            return AMQPError(.protocolError, operation: operation, detail: "unknown reply type")
        }
    }

    private func libraryError(_ status: Int32, operation: String) -> AMQPError {
        let code: AMQPError.Code = status == AMQP_STATUS_TIMEOUT.rawValue ? .timeout : .connectionLost
        return AMQPError(code, operation: operation, detail: Self.statusText(status))
    }

    /// Forgets a channel the broker closed; its owner gets a fresh one when it next needs it.
    private func channelClosedByBroker(_ channel: UInt16) {
        acknowledgements[channel] = nil
        if rpcChannel == channel { rpcChannel = nil }
        pendingContent[channel] = nil
        channelOwners[channel] = nil
    }

    // MARK: - Topology

    func declare(_ exchange: ExchangeDeclaration, passive: Bool, record: Bool = true) -> Result<Void, AMQPError> {
        let arena = CArena()
        let result = rpc("exchange.declare \(exchange.name)") { state, channel in
            amqp_exchange_declare(state, channel, arena.bytes(exchange.name), arena.bytes(exchange.type),
                                  passive ? 1 : 0, exchange.durable ? 1 : 0, exchange.autoDelete ? 1 : 0,
                                  exchange.internal ? 1 : 0, arena.table(exchange.arguments))
        }.map { _ in () }
        if case .success = result, record, !passive { recorded.record(.exchange(exchange)) }
        return result
    }

    func declare(_ queue: QueueDeclaration, passive: Bool, record: Bool = true) -> Result<QueueState, AMQPError> {
        let arena = CArena()
        let result = rpc("queue.declare \(queue.name)") { state, channel in
            amqp_queue_declare(state, channel, arena.bytes(queue.name), passive ? 1 : 0, queue.durable ? 1 : 0,
                               queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(queue.arguments))
        }.map { ok in
            QueueState(name: ok.pointee.queue.string, messageCount: ok.pointee.message_count, consumerCount: ok.pointee.consumer_count)
        }
        if case .success = result, record, !passive, !queue.name.isEmpty { recorded.record(.queue(queue)) }
        return result
    }

    func declare(_ binding: BindingDeclaration, record: Bool = true) -> Result<Void, AMQPError> {
        let arena = CArena()
        let operation = "bind \(binding.source) -> \(binding.destination) (\(binding.routingKey))"
        let result: Result<Void, AMQPError>
        switch binding.destinationType {
        case .queue:
            result = rpc(operation) { state, channel in
                amqp_queue_bind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                                arena.bytes(binding.routingKey), arena.table(binding.arguments))
            }.map { _ in () }
        case .exchange:
            result = rpc(operation) { state, channel in
                amqp_exchange_bind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                                   arena.bytes(binding.routingKey), arena.table(binding.arguments))
            }.map { _ in () }
        }
        if case .success = result, record { recorded.record(.binding(binding)) }
        return result
    }

    func unbind(_ binding: BindingDeclaration) -> Result<Void, AMQPError> {
        let arena = CArena()
        let operation = "unbind \(binding.source) -> \(binding.destination) (\(binding.routingKey))"
        recorded.forget(binding: binding)
        switch binding.destinationType {
        case .queue:
            return rpc(operation) { state, channel in
                amqp_queue_unbind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                                  arena.bytes(binding.routingKey), arena.table(binding.arguments))
            }.map { _ in () }
        case .exchange:
            return rpc(operation) { state, channel in
                amqp_exchange_unbind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                                     arena.bytes(binding.routingKey), arena.table(binding.arguments))
            }.map { _ in () }
        }
    }

    func deleteExchange(_ name: String, ifUnused: Bool) -> Result<Void, AMQPError> {
        let arena = CArena()
        recorded.forget(exchange: name)
        return rpc("exchange.delete \(name)") { state, channel in
            amqp_exchange_delete(state, channel, arena.bytes(name), ifUnused ? 1 : 0)
        }.map { _ in () }
    }

    func deleteQueue(_ name: String, ifUnused: Bool, ifEmpty: Bool) -> Result<UInt32, AMQPError> {
        let arena = CArena()
        recorded.forget(queue: name)
        return rpc("queue.delete \(name)") { state, channel in
            amqp_queue_delete(state, channel, arena.bytes(name), ifUnused ? 1 : 0, ifEmpty ? 1 : 0)
        }.map { $0.pointee.message_count }
    }

    func purgeQueue(_ name: String) -> Result<UInt32, AMQPError> {
        let arena = CArena()
        return rpc("queue.purge \(name)") { state, channel in
            amqp_queue_purge(state, channel, arena.bytes(name))
        }.map { $0.pointee.message_count }
    }

    private func redeclare(_ declaration: RecordedTopology.Declaration) -> Result<Void, AMQPError> {
        switch declaration {
        case .exchange(let exchange): return declare(exchange, passive: false, record: false)
        case .queue(let queue): return declare(queue, passive: false, record: false).map { _ in () }
        case .binding(let binding): return declare(binding, record: false)
        }
    }

    /// `basic.get`: one message or nothing, on the channel kept for synchronous methods.
    func get(queue: String, noAck: Bool, connection: AMQPConnection) -> Result<AMQPDelivery?, AMQPError> {
        let arena = CArena()
        let operation = "basic.get \(queue)"
        var channelUsed: UInt16 = 0
        let reply = rpc(operation) { state, channel -> amqp_rpc_reply_t? in
            channelUsed = channel
            return amqp_basic_get(state, channel, arena.bytes(queue), noAck ? 1 : 0)
        }
        switch reply {
        case .failure(let error): return .failure(error)
        case .success(let reply):
            guard reply.reply.id == AMQP_BASIC_GET_OK_METHOD, let decoded = reply.reply.decoded, let state else { return .success(nil) }
            let ok = decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
            let info = DeliveryInfo(
                deliveryTag: ok.delivery_tag, redelivered: ok.redelivered != 0, exchange: ok.exchange.string,
                routingKey: ok.routing_key.string, consumerTag: "", messageCount: ok.message_count)
            var message = amqp_message_t()
            let read = amqp_read_message(state, channelUsed, &message, 0)
            defer { amqp_destroy_message(&message) }
            if let error = replyError(read, operation: operation, channel: channelUsed, state: state, duringLogin: false) {
                return .failure(error)
            }
            let properties = withUnsafePointer(to: &message.properties) { AMQPProperties($0) }
            return .success(AMQPDelivery(
                body: message.body.data, properties: properties, info: info,
                acknowledger: noAck ? nil : DeliveryAcknowledger(connection: connection, channel: channelUsed, generation: generation)))
        }
    }

    // MARK: - Publishing

    func register(_ publisher: PublisherState) -> Result<Void, AMQPError> {
        publishers[ObjectIdentifier(publisher)] = publisher
        return ensurePublisherChannel(publisher)
    }

    func unregister(_ publisher: PublisherState) {
        publishers[ObjectIdentifier(publisher)] = nil
        publisher.connectionLost(AMQPError(.closedByApplication, operation: "publisher closed"), failingBacklog: true)
        if let channel = publisher.channel {
            publisher.channel = nil
            closeChannel(channel)
        }
    }

    private func ensurePublisherChannel(_ publisher: PublisherState) -> Result<Void, AMQPError> {
        if publisher.channel != nil { return .success(()) }
        switch openChannel(owner: .publisher(publisher), operation: "open publisher channel") {
        case .failure(let error): return .failure(error)
        case .success(let channel):
            if publisher.confirms, let state {
                _ = amqp_confirm_select(state, channel)
                if let error = rpcError(operation: "confirm.select", channel: channel) { return .failure(error) }
            }
            publisher.channel = channel
            publisher.nextSequence = 1
            return .success(())
        }
    }

    /// Publishes now if the confirm window has room, or queues the message until it does.
    func publish(_ message: OutgoingMessage, on publisher: PublisherState) {
        if publisher.pending.count >= publisher.window {
            publisher.backlog.append(message)
            return
        }
        send(message, on: publisher)
    }

    private func send(_ message: OutgoingMessage, on publisher: PublisherState) {
        guard isConnected else {
            message.completion(.failure(unavailableError))
            return
        }
        if case .failure(let error) = ensurePublisherChannel(publisher) {
            message.completion(.failure(error))
            return
        }
        guard let state, let channel = publisher.channel else {
            message.completion(.failure(unavailableError))
            return
        }
        let sequence = publisher.nextSequence
        var properties = message.properties
        if message.mandatory && publisher.confirms {
            var headers = properties.headers ?? [:]
            headers[PublisherState.sequenceHeader] = .int64(Int64(sequence))
            properties.headers = headers
        }
        let arena = CArena()
        let status = properties.withCProperties(arena: arena) { cProperties in
            message.body.withUnsafeBytes { body in
                amqp_basic_publish(
                    state, channel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                    message.mandatory ? 1 : 0, 0, cProperties,
                    amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
            }
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            let error = libraryError(status, operation: "basic.publish to \(message.exchange)")
            message.completion(.failure(error))
            connectionLost(error)
            return
        }
        if publisher.confirms {
            publisher.nextSequence += 1
            publisher.pending.append((sequence, PublisherState.Pending(completion: message.completion)))
        } else {
            message.completion(.success(()))
        }
    }

    /// Sends queued messages while the window has room.
    private func drainBacklog(_ publisher: PublisherState) {
        while publisher.pending.count < publisher.window, !publisher.backlog.isEmpty {
            let message = publisher.backlog.removeFirst()
            send(message, on: publisher)
        }
    }

    // MARK: - Consuming

    func register(_ consumer: ConsumerState) -> Result<String, AMQPError> {
        switch startConsuming(consumer) {
        case .failure(let error): return .failure(error)
        case .success:
            consumers[ObjectIdentifier(consumer)] = consumer
            return .success(consumer.tag)
        }
    }

    private func startConsuming(_ consumer: ConsumerState) -> Result<Void, AMQPError> {
        switch openChannel(owner: .consumer(consumer), operation: "open consumer channel") {
        case .failure(let error): return .failure(error)
        case .success(let channel):
            guard let state else { return .failure(unavailableError) }
            if consumer.prefetch > 0 {
                _ = amqp_basic_qos(state, channel, 0, consumer.prefetch, 0)
                if let error = rpcError(operation: "basic.qos", channel: channel) { return .failure(error) }
            }
            let arena = CArena()
            let ok = amqp_basic_consume(state, channel, arena.bytes(consumer.queue), arena.bytes(consumer.tag), 0,
                                        consumer.noAck ? 1 : 0, consumer.exclusive ? 1 : 0, arena.table(consumer.arguments))
            if let error = rpcError(operation: "basic.consume \(consumer.queue)", channel: channel) { return .failure(error) }
            if let ok { consumer.tag = ok.pointee.consumer_tag.string }
            consumer.channel = channel
            return .success(())
        }
    }

    func cancel(_ consumer: ConsumerState) -> Result<Void, AMQPError> {
        let wasConsuming = consumers.removeValue(forKey: ObjectIdentifier(consumer)) != nil
        defer { finishConsumer(consumer, error: nil) }
        guard let channel = consumer.channel, let state, isConnected else { return .success(()) }
        guard wasConsuming else {
            // Deliveries were stopped already; closing the channel returns what was not settled.
            closeChannel(channel)
            consumer.channel = nil
            return .success(())
        }
        let arena = CArena()
        _ = amqp_basic_cancel(state, channel, arena.bytes(consumer.tag))
        let error = rpcError(operation: "basic.cancel \(consumer.tag)", channel: channel)
        // Closing the channel returns every unacknowledged delivery to the queue.
        closeChannel(channel)
        consumer.channel = nil
        return error.map { .failure($0) } ?? .success(())
    }

    /// Stops deliveries but keeps the channel, so deliveries in hand can still be settled.
    func stopDeliveries(_ consumer: ConsumerState) -> Result<Void, AMQPError> {
        consumers[ObjectIdentifier(consumer)] = nil
        defer { finishConsumer(consumer, error: nil) }
        guard let channel = consumer.channel, let state, isConnected else { return .success(()) }
        let arena = CArena()
        _ = amqp_basic_cancel(state, channel, arena.bytes(consumer.tag))
        return rpcError(operation: "basic.cancel \(consumer.tag)", channel: channel).map { .failure($0) } ?? .success(())
    }

    private func finishConsumer(_ consumer: ConsumerState, error: AMQPError?) {
        consumers[ObjectIdentifier(consumer)] = nil
        consumer.finish(error)
    }

    /// Acknowledges, rejects or returns deliveries of this generation; older ones are already back in their queue.
    func settle(_ settlement: Settlement, channel: UInt16, deliveryTag: UInt64, generation: UInt64) -> Result<Void, AMQPError> {
        guard generation == self.generation, let state, isConnected, channelOwners[channel] != nil else {
            return .failure(AMQPError(.staleDelivery, operation: "settle delivery \(deliveryTag)"))
        }
        let status: Int32
        switch settlement {
        case .ack(false):
            // Single acknowledgements wait for the end of this round of jobs, where contiguous ones are sent
            // as one `multiple` acknowledgement.
            acknowledgements[channel, default: AcknowledgementBuffer()].pending.append(deliveryTag)
            return .success(())
        case .ack(true):
            acknowledgements[channel]?.settled(through: deliveryTag)
            status = amqp_basic_ack(state, channel, deliveryTag, 1)
        case .nack(let requeue, let multiple):
            if multiple { acknowledgements[channel]?.settled(through: deliveryTag) } else { acknowledgements[channel]?.settledOutOfOrder(deliveryTag) }
            status = amqp_basic_nack(state, channel, deliveryTag, multiple ? 1 : 0, requeue ? 1 : 0)
        case .reject(let requeue):
            acknowledgements[channel]?.settledOutOfOrder(deliveryTag)
            status = amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0)
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            let error = libraryError(status, operation: "settle delivery \(deliveryTag)")
            connectionLost(error)
            return .failure(error)
        }
        return .success(())
    }

    /// Sends the acknowledgements buffered during this round of jobs: the contiguous run from the lowest
    /// unsettled delivery as one `multiple` acknowledgement, the rest one by one, so that a slow delivery never
    /// holds back the acknowledgement of later ones.
    func flushAcknowledgements() {
        guard !acknowledgements.isEmpty else { return }
        for channel in Array(acknowledgements.keys) { flushAcknowledgements(channel: channel) }
    }

    /// Sends the acknowledgements buffered for one channel (before it closes, so none is lost).
    private func flushAcknowledgements(channel: UInt16) {
        guard var buffer = acknowledgements[channel], !buffer.pending.isEmpty else { return }
        guard let state, isConnected, channelOwners[channel] != nil else {
            acknowledgements[channel] = nil
            return
        }
        let (through, singles) = buffer.drain()
        acknowledgements[channel] = buffer
        var status = AMQP_STATUS_OK.rawValue
        if let through {
            status = amqp_basic_ack(state, channel, through, 1)
        }
        for tag in singles where status == AMQP_STATUS_OK.rawValue {
            status = amqp_basic_ack(state, channel, tag, 0)
        }
        if status != AMQP_STATUS_OK.rawValue {
            connectionLost(libraryError(status, operation: "basic.ack"))
        }
    }

    // MARK: - Frames from the broker

    private func handle(_ frame: amqp_frame_t) {
        let channel = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            handleMethod(id: frame.payload.method.id, decoded: frame.payload.method.decoded, channel: channel)
        case AMQP_FRAME_HEADER:
            guard var content = pendingContent[channel] else { return }
            if let decoded = frame.payload.properties.decoded {
                content.properties = AMQPProperties(decoded.assumingMemoryBound(to: amqp_basic_properties_t.self))
            }
            content.expectedSize = Int(frame.payload.properties.body_size)
            content.body.reserveCapacity(content.expectedSize)
            if content.expectedSize == 0 {
                pendingContent[channel] = nil
                complete(content, channel: channel)
            } else {
                pendingContent[channel] = content
            }
        case AMQP_FRAME_BODY:
            guard var content = pendingContent[channel] else { return }
            pendingContent[channel] = nil
            let fragment = frame.payload.body_fragment
            if fragment.len > 0, let bytes = fragment.bytes {
                content.body.append(bytes.assumingMemoryBound(to: UInt8.self), count: fragment.len)
            }
            if content.body.count >= content.expectedSize {
                complete(content, channel: channel)
            } else {
                pendingContent[channel] = content
            }
        default:
            break
        }
    }

    private func handleMethod(id: amqp_method_number_t, decoded: UnsafeMutableRawPointer?, channel: UInt16) {
        guard let state else { return }
        switch id {
        case fleet_basic_deliver:
            guard let decoded else { return }
            let deliver = decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            pendingContent[channel] = PendingContent(kind: .delivery(DeliveryInfo(
                deliveryTag: deliver.delivery_tag, redelivered: deliver.redelivered != 0, exchange: deliver.exchange.string,
                routingKey: deliver.routing_key.string, consumerTag: deliver.consumer_tag.string, messageCount: nil)))
        case fleet_basic_ack, fleet_basic_nack:
            guard let decoded, case .publisher(let publisher)? = channelOwners[channel] else { return }
            if id == fleet_basic_ack {
                let ack = decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
                publisher.confirm(upTo: ack.delivery_tag, multiple: ack.multiple != 0, error: nil)
            } else {
                let nack = decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
                publisher.confirm(upTo: nack.delivery_tag, multiple: nack.multiple != 0,
                                  error: AMQPError(.messageNacked, operation: "publish", detail: "the broker did not store the message"))
            }
            drainBacklog(publisher)
        case fleet_basic_return:
            guard let decoded else { return }
            let returned = decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            pendingContent[channel] = PendingContent(kind: .returned(
                replyCode: returned.reply_code, replyText: returned.reply_text.string,
                exchange: returned.exchange.string, routingKey: returned.routing_key.string))
        case fleet_basic_cancel:
            guard case .consumer(let consumer)? = channelOwners[channel] else { return }
            channelOwners[channel] = nil
            consumer.channel = nil
            closeChannel(channel)
            finishConsumer(consumer, error: AMQPError(.consumerCancelled, operation: "consume \(consumer.queue)",
                                                      detail: "the broker cancelled the consumer (queue deleted?)"))
        case fleet_channel_close:
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(state, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            let close = decoded?.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let owner = channelOwners[channel]
            channelClosedByBroker(channel)
            let error = AMQPError.fromReply(code: close?.reply_code ?? 0, text: close?.reply_text.string ?? "",
                                            operation: "channel \(channel)", onConnection: false)
            logger.warning("amqp: broker closed a channel", metadata: ["error": "\(error)"])
            switch owner {
            case .publisher(let publisher)?:
                publisher.channel = nil
                publisher.connectionLost(error)
                drainBacklog(publisher)
            case .consumer(let consumer)?:
                consumer.channel = nil
                // Unacknowledged deliveries went back to the queue; consume again on a fresh channel.
                if case .failure(let restartError) = startConsuming(consumer) {
                    finishConsumer(consumer, error: restartError)
                }
            default:
                break
            }
        case fleet_connection_close:
            var ok = amqp_connection_close_ok_t()
            _ = amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
            let close = decoded?.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            connectionLost(AMQPError.fromReply(code: close?.reply_code ?? 0, text: close?.reply_text.string ?? "",
                                               operation: "connection", onConnection: true))
        case fleet_connection_blocked:
            let reason = decoded?.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee.reason.string ?? ""
            shared.blocked.store(true, ordering: .relaxed)
            logger.warning("amqp: the broker blocked publishing", metadata: ["reason": "\(reason)"])
        case fleet_connection_unblocked:
            shared.blocked.store(false, ordering: .relaxed)
            logger.info("amqp: the broker unblocked publishing")
        default:
            logger.debug("amqp: ignored method", metadata: ["method": "\(id)", "channel": "\(channel)"])
        }
    }

    private func complete(_ content: PendingContent, channel: UInt16) {
        switch content.kind {
        case .delivery(let info):
            guard case .consumer(let consumer)? = channelOwners[channel], let connection = consumer.connection else { return }
            let acknowledger = consumer.noAck ? nil : DeliveryAcknowledger(connection: connection, channel: channel, generation: generation)
            consumer.yield(AMQPDelivery(body: content.body, properties: content.properties, info: info, acknowledger: acknowledger))
        case .returned(let replyCode, let replyText, let exchange, let routingKey):
            guard case .publisher(let publisher)? = channelOwners[channel] else { return }
            let sequence = content.properties.headers?[PublisherState.sequenceHeader]?.intValue
            let error = AMQPError(.messageReturned, operation: "publish to \(exchange) with key \(routingKey)",
                                  replyCode: replyCode, replyText: replyText)
            if let sequence {
                publisher.markReturned(UInt64(sequence), error: error)
            }
        }
    }

    // MARK: - Helpers

    static func statusText(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    static func makeTimeval(_ duration: Duration) -> timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}

/// How a delivery is settled.
enum Settlement: Sendable {
    case ack(multiple: Bool)
    case nack(requeue: Bool, multiple: Bool)
    case reject(requeue: Bool)
}

/// Single acknowledgements of one channel waiting to be sent, and what is known settled.
///
/// Delivery tags on a channel start at 1 and grow by one per delivery, so "every tag up to n is settled" is
/// one number: `settledThrough`.
struct AcknowledgementBuffer {
    /// Tags acknowledged by the application and not sent yet.
    var pending: [UInt64] = []
    /// Every tag up to this one is settled on the broker (by a frame already sent).
    private(set) var settledThrough: UInt64 = 0
    /// Tags above `settledThrough` already settled by a frame sent on its own (ack, nack or reject).
    private var sentAhead = Set<UInt64>()

    /// A `multiple` settlement up to `tag` was sent.
    mutating func settled(through tag: UInt64) {
        guard tag > settledThrough else { return }
        settledThrough = tag
        sentAhead = sentAhead.filter { $0 > tag }
        pending.removeAll { $0 <= tag }
        advance()
    }

    /// A settlement of `tag` alone was sent.
    mutating func settledOutOfOrder(_ tag: UInt64) {
        guard tag > settledThrough else { return }
        sentAhead.insert(tag)
        advance()
    }

    private mutating func advance() {
        while sentAhead.remove(settledThrough + 1) != nil { settledThrough += 1 }
    }

    /// Returns the tag to acknowledge with `multiple` (nil when no contiguous run starts at the lowest unsettled
    /// tag) and the tags to acknowledge one by one. The `multiple` target is always a tag not settled before,
    /// as the broker requires.
    mutating func drain() -> (through: UInt64?, singles: [UInt64]) {
        var acknowledged = Set(pending.filter { $0 > settledThrough })
        pending.removeAll(keepingCapacity: true)
        var target: UInt64?
        while true {
            let next = settledThrough + 1
            if acknowledged.remove(next) != nil {
                target = next
            } else if sentAhead.remove(next) == nil {
                break
            }
            settledThrough = next
        }
        let singles = acknowledged.sorted()
        sentAhead.formUnion(singles)
        return (target, singles)
    }
}

/// A message being assembled from its method, header and body frames.
struct PendingContent {
    enum Kind {
        case delivery(DeliveryInfo)
        case returned(replyCode: UInt16, replyText: String, exchange: String, routingKey: String)
    }

    var kind: Kind
    var properties = AMQPProperties()
    var expectedSize = 0
    var body = Data()
}

/// The declarations made through a connection, replayed in order after a recovery.
struct RecordedTopology {
    enum Declaration {
        case exchange(ExchangeDeclaration)
        case queue(QueueDeclaration)
        case binding(BindingDeclaration)
    }

    private(set) var replay: [Declaration] = []

    mutating func record(_ declaration: Declaration) {
        switch declaration {
        case .exchange(let exchange): forget(exchange: exchange.name)
        case .queue(let queue): forget(queue: queue.name)
        case .binding(let binding): forget(binding: binding)
        }
        replay.append(declaration)
    }

    mutating func forget(exchange name: String) {
        replay.removeAll {
            if case .exchange(let e) = $0 { return e.name == name }
            return false
        }
    }

    mutating func forget(queue name: String) {
        replay.removeAll {
            switch $0 {
            case .queue(let q): return q.name == name
            case .binding(let b): return b.destinationType == .queue && b.destination == name
            default: return false
            }
        }
    }

    mutating func forget(binding: BindingDeclaration) {
        replay.removeAll {
            if case .binding(let b) = $0 { return b == binding }
            return false
        }
    }
}
