import Foundation

/// A message on its way to the broker, with what to call when its fate is known.
struct OutgoingMessage: Sendable {
    var body: Data
    var exchange: String
    var routingKey: String
    var properties: AMQPProperties
    var mandatory: Bool
    var completion: @Sendable (Result<Void, AMQPError>) -> Void
}

/// A message to publish.
public struct AMQPMessage: Sendable {
    /// The message body.
    public var body: Data
    /// The exchange; empty for the default exchange.
    public var exchange: String
    /// The routing key.
    public var routingKey: String
    /// The message properties.
    public var properties: AMQPProperties
    /// Whether an unroutable message must come back as an error.
    public var mandatory: Bool

    /// A message; persistent by default.
    public init(body: Data, exchange: String, routingKey: String, properties: AMQPProperties = .persistent, mandatory: Bool = false) {
        self.body = body
        self.exchange = exchange
        self.routingKey = routingKey
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// Gathers the results of a batch; every completion runs on the connection thread.
final class BatchCollector: @unchecked Sendable {
    private var results: [Result<Void, AMQPError>?]
    private var remaining: Int
    var onComplete: (@Sendable ([Result<Void, AMQPError>]) -> Void)?

    init(count: Int) {
        results = Array(repeating: nil, count: count)
        remaining = count
    }

    func record(_ index: Int, _ result: Result<Void, AMQPError>) {
        guard results[index] == nil else { return }
        results[index] = result
        remaining -= 1
        if remaining == 0 { onComplete?(results.map { $0! }) }
    }
}

/// A publisher's state on the connection thread: its channel, the confirm sequence and the messages
/// waiting for their confirm.
final class PublisherState: @unchecked Sendable {
    /// Header carrying the confirm sequence number of a mandatory message, so that a `basic.return` can be
    /// matched to the message it returns.
    static let sequenceHeader = "x-publish-sequence"

    struct Pending {
        var completion: @Sendable (Result<Void, AMQPError>) -> Void
        var returned: AMQPError?
    }

    let confirms: Bool
    let window: Int
    var channel: UInt16?
    var nextSequence: UInt64 = 1
    /// Messages waiting for their confirm, in sequence order (sequences only grow, so appending keeps it
    /// sorted and a `multiple` confirm settles a prefix).
    var pending: [(sequence: UInt64, entry: Pending)] = []
    var backlog: [OutgoingMessage] = []

    init(confirms: Bool, window: Int) {
        self.confirms = confirms
        self.window = max(1, window)
    }

    /// Resolves the messages a `basic.ack` or `basic.nack` covers.
    func confirm(upTo tag: UInt64, multiple: Bool, error: AMQPError?) {
        if multiple {
            let count = pending.prefix { $0.sequence <= tag }.count
            let settled = pending.prefix(count)
            pending.removeFirst(count)
            for (_, entry) in settled { resolve(entry, error: error) }
        } else if let index = index(of: tag) {
            let entry = pending.remove(at: index).entry
            resolve(entry, error: error)
        }
    }

    /// Marks the message with `sequence` as returned by the broker; its confirm then fails with `error`.
    func markReturned(_ sequence: UInt64, error: AMQPError) {
        if let index = index(of: sequence) { pending[index].entry.returned = error }
    }

    private func index(of sequence: UInt64) -> Int? {
        var low = 0, high = pending.count
        while low < high {
            let middle = (low + high) / 2
            if pending[middle].sequence < sequence { low = middle + 1 } else { high = middle }
        }
        return low < pending.count && pending[low].sequence == sequence ? low : nil
    }

    private func resolve(_ entry: Pending, error: AMQPError?) {
        if let failure = error ?? entry.returned {
            entry.completion(.failure(failure))
        } else {
            entry.completion(.success(()))
        }
    }

    /// Fails every message whose confirm can no longer come: its outcome is unknown, so it must be sent again.
    ///
    /// With `failingBacklog` (the connection is lost or closed, or the publisher closed), the messages still
    /// waiting for room in the window fail too: they were never sent, and nothing would send them or answer
    /// their callers (only a confirm drains the backlog, and none comes on a new connection until someone
    /// publishes again; after a close, never). A channel closed by the broker keeps them: they go out on a
    /// fresh channel.
    func connectionLost(_ error: AMQPError, failingBacklog: Bool = false) {
        let waiting = pending
        pending = []
        channel = nil
        let unsent = failingBacklog ? backlog : []
        if failingBacklog { backlog = [] }
        for (_, entry) in waiting { entry.completion(.failure(error)) }
        for message in unsent { message.completion(.failure(error)) }
    }
}

/// Publishes messages on a channel of its own, in confirm mode by default.
///
/// Each `publish` returns once the broker has taken responsibility for the message (`basic.ack`), and throws
/// when it refused it (`basic.nack`), when a `mandatory` message could not be routed (`basic.return`), or when
/// the connection was lost before the confirm came (the message may or may not have been stored: publish it
/// again; consumers deduplicate by message id). Many tasks may publish at once: at most `window` messages
/// wait for their confirm at any time, the rest queue on the connection's thread.
public final class AMQPPublisher: Sendable {
    let connection: AMQPConnection
    let state: PublisherState

    init(connection: AMQPConnection, state: PublisherState) {
        self.connection = connection
        self.state = state
    }

    /// Whether `publish` waits for the broker's confirm.
    public var confirms: Bool { state.confirms }

    /// Publishes one message.
    ///
    /// - Parameters:
    ///   - body: the message body.
    ///   - exchange: the exchange; empty for the default exchange (routing key = queue name).
    ///   - routingKey: the routing key.
    ///   - properties: the message properties; persistent by default.
    ///   - mandatory: whether an unroutable message must come back as an error rather than be dropped.
    public func publish(_ body: Data, exchange: String, routingKey: String, properties: AMQPProperties = .persistent,
                        mandatory: Bool = false) async throws(AMQPError) {
        let state = self.state
        let result: Result<Void, AMQPError> = await withCheckedContinuation { continuation in
            let message = OutgoingMessage(
                body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory,
                completion: { continuation.resume(returning: $0) })
            let accepted = connection.thread.submit { core in core.publish(message, on: state) }
            if !accepted { continuation.resume(returning: .failure(AMQPError(.closedByApplication, operation: "publish"))) }
        }
        try result.get()
    }

    /// Publishes one message whose body is bytes.
    public func publish(_ body: [UInt8], exchange: String, routingKey: String, properties: AMQPProperties = .persistent,
                        mandatory: Bool = false) async throws(AMQPError) {
        try await publish(Data(body), exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    /// Publishes one message whose body is UTF-8 text.
    public func publish(_ text: String, exchange: String, routingKey: String, properties: AMQPProperties = .persistent,
                        mandatory: Bool = false) async throws(AMQPError) {
        try await publish(Data(text.utf8), exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    /// Publishes several messages in one hand-off to the connection thread and waits for every confirm.
    ///
    /// The window still applies: a batch larger than it is sent as confirms come back. The results are in
    /// the order of `messages`.
    public func publish(contentsOf messages: [AMQPMessage]) async -> [Result<Void, AMQPError>] {
        guard !messages.isEmpty else { return [] }
        let state = self.state
        let collector = BatchCollector(count: messages.count)
        return await withCheckedContinuation { continuation in
            collector.onComplete = { continuation.resume(returning: $0) }
            let accepted = connection.thread.submit { core in
                for (index, message) in messages.enumerated() {
                    let outgoing = OutgoingMessage(
                        body: message.body, exchange: message.exchange, routingKey: message.routingKey,
                        properties: message.properties, mandatory: message.mandatory,
                        completion: { collector.record(index, $0) })
                    core.publish(outgoing, on: state)
                }
            }
            if !accepted {
                for index in messages.indices { collector.record(index, .failure(AMQPError(.closedByApplication, operation: "publish"))) }
            }
        }
    }

    /// Closes the publisher's channel. Messages still waiting for a confirm fail with `.closedByApplication`.
    public func close() async {
        let state = self.state
        await connection.perform { core in core.unregister(state) }
    }
}
