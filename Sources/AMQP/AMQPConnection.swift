import Foundation
import Logging

/// A connection to a RabbitMQ broker, confined to an OS thread of its own.
///
/// All methods are safe to call from any task. Blocking librabbitmq calls run on the connection's thread, never
/// on Swift's cooperative pool. Use separate connections for publishing and consuming, so that a broker
/// throttling publishers cannot slow deliveries down.
///
/// When the connection is lost it recovers by itself (unless `configuration.recovery` is nil): it reconnects
/// with backoff, declares again what was declared through it, reopens publisher channels and resumes
/// consumers. Operations attempted while it is down fail with a retryable `.connectionLost`.
public final class AMQPConnection: Sendable {
    /// The configuration the connection was opened with.
    public let configuration: AMQPConfiguration
    let logger: Logger
    let thread: ConnectionThread
    let shared: ConnectionSharedState

    private init(configuration: AMQPConfiguration, logger: Logger, thread: ConnectionThread, shared: ConnectionSharedState) {
        self.configuration = configuration
        self.logger = logger
        self.thread = thread
        self.shared = shared
    }

    deinit {
        thread.submit { core in core.closeByApplication() }
    }

    /// Opens a connection and logs in.
    ///
    /// - Throws: ``AMQPError``: `.connectionRefused`, `.timeout`, `.tlsFailure`, `.authenticationFailed`,
    ///   `.virtualHostNotAllowed`, ...
    public static func connect(_ configuration: AMQPConfiguration, logger: Logger = Logger(label: "processfleet.amqp")) async throws(AMQPError) -> AMQPConnection {
        let thread = try ConnectionThread()
        let shared = ConnectionSharedState()
        let core = ConnectionCore(configuration: configuration, logger: logger, thread: thread, shared: shared)
        let opened: Result<Void, AMQPError> = await withCheckedContinuation { continuation in
            thread.start(name: "amqp \(configuration.host):\(configuration.port)") {
                let result = core.open()
                continuation.resume(returning: result)
                if case .success = result {
                    core.run()
                } else {
                    _ = thread.stopAccepting()
                }
            }
        }
        try opened.get()
        return AMQPConnection(configuration: configuration, logger: logger, thread: thread, shared: shared)
    }

    /// Opens a connection from an `amqp://` or `amqps://` URL.
    public static func connect(url: String, logger: Logger = Logger(label: "processfleet.amqp")) async throws(AMQPError) -> AMQPConnection {
        try await connect(AMQPConfiguration(url: url), logger: logger)
    }

    /// Whether the connection is up now (false while it recovers).
    public var isConnected: Bool { shared.connected.load(ordering: .relaxed) }

    /// Whether the broker has blocked publishing on this connection (`connection.blocked`, a resource alarm).
    public var isBlocked: Bool { shared.blocked.load(ordering: .relaxed) }

    /// How many times the connection has recovered from a loss.
    public var recoveryCount: Int { shared.recoveries.load(ordering: .relaxed) }

    /// Closes the connection: consumers end, publishers' unconfirmed messages fail, the thread exits.
    public func close() async {
        await perform { core in core.closeByApplication() }
    }

    /// Runs `body` on the connection's thread and returns its result.
    func perform<T: Sendable>(_ body: @escaping @Sendable (ConnectionCore) -> T) async -> T where T: Sendable {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let accepted = thread.submit { core in continuation.resume(returning: body(core)) }
            if !accepted { continuation.resume(returning: nil) }
        } ?? Self.closedResult()
    }

    /// Runs a fallible `body` on the connection's thread.
    func perform<T: Sendable>(_ body: @escaping @Sendable (ConnectionCore) -> Result<T, AMQPError>) async -> Result<T, AMQPError> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, AMQPError>, Never>) in
            let accepted = thread.submit { core in continuation.resume(returning: body(core)) }
            if !accepted { continuation.resume(returning: .failure(AMQPError(.closedByApplication, operation: "use connection"))) }
        }
    }

    private static func closedResult<T>() -> T {
        if T.self == Void.self { return () as! T }
        preconditionFailure("a job that cannot fail was refused by a closed connection")
    }

    // MARK: - Topology

    /// Declares an exchange; with `passive`, only checks that it exists.
    public func declare(_ exchange: ExchangeDeclaration, passive: Bool = false) async throws(AMQPError) {
        try await perform { core in core.declare(exchange, passive: passive) }.get()
    }

    /// Declares a queue; with `passive`, only checks that it exists. Returns its name and counts.
    @discardableResult
    public func declare(_ queue: QueueDeclaration, passive: Bool = false) async throws(AMQPError) -> QueueState {
        try await perform { core in core.declare(queue, passive: passive) }.get()
    }

    /// Binds a queue or exchange to an exchange.
    public func declare(_ binding: BindingDeclaration) async throws(AMQPError) {
        try await perform { core in core.declare(binding) }.get()
    }

    /// Removes a binding.
    public func unbind(_ binding: BindingDeclaration) async throws(AMQPError) {
        try await perform { core in core.unbind(binding) }.get()
    }

    /// Deletes an exchange.
    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws(AMQPError) {
        try await perform { core in core.deleteExchange(name, ifUnused: ifUnused) }.get()
    }

    /// Deletes a queue; returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws(AMQPError) -> UInt32 {
        try await perform { core in core.deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty) }.get()
    }

    /// Removes every ready message from a queue; returns how many there were.
    @discardableResult
    public func purgeQueue(_ name: String) async throws(AMQPError) -> UInt32 {
        try await perform { core in core.purgeQueue(name) }.get()
    }

    // MARK: - Messages

    /// Opens a publisher on a channel of its own.
    ///
    /// - Parameters:
    ///   - confirms: whether each publish waits for the broker's confirm (on by default).
    ///   - window: how many messages may wait for their confirm at once.
    public func makePublisher(confirms: Bool = true, window: Int = 256) async throws(AMQPError) -> AMQPPublisher {
        let state = PublisherState(confirms: confirms, window: window)
        try await perform { core in core.register(state) }.get()
        return AMQPPublisher(connection: self, state: state)
    }

    /// Starts consuming a queue with manual acknowledgements (unless `noAck`).
    ///
    /// - Parameters:
    ///   - queue: the queue.
    ///   - prefetch: how many unacknowledged deliveries the broker may send ahead (0 = no limit).
    ///   - consumerTag: the tag; empty lets the broker choose.
    ///   - exclusive: whether no other consumer may use the queue meanwhile.
    ///   - noAck: whether the broker forgets messages as it sends them (no acknowledgement needed).
    ///   - arguments: consumer arguments (`x-priority`, `x-stream-offset`, ...).
    public func consume(queue: String, prefetch: UInt16 = 256, consumerTag: String = "", exclusive: Bool = false,
                        noAck: Bool = false, arguments: AMQPTable = [:]) async throws(AMQPError) -> AMQPConsumer {
        let (stream, continuation) = AsyncThrowingStream<AMQPDelivery, any Error>.makeStream()
        let state = ConsumerState(queue: queue, tag: consumerTag, prefetch: prefetch, exclusive: exclusive, noAck: noAck,
                                  arguments: arguments, continuation: continuation)
        state.connection = self
        _ = try await perform { core in core.register(state) }.get()
        return AMQPConsumer(connection: self, state: state, stream: stream)
    }

    /// Takes one message from a queue (`basic.get`), or nil when it is empty. Meant for tools; workers consume.
    public func get(queue: String, noAck: Bool = false) async throws(AMQPError) -> AMQPDelivery? {
        try await perform { [self] core in core.get(queue: queue, noAck: noAck, connection: self) }.get()
    }
}
