import Foundation

/// A consumer's state on the connection thread.
final class ConsumerState: @unchecked Sendable {
    let queue: String
    var tag: String
    let prefetch: UInt16
    let exclusive: Bool
    let noAck: Bool
    let arguments: AMQPTable
    var channel: UInt16?
    weak var connection: AMQPConnection?
    private let continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation

    init(queue: String, tag: String, prefetch: UInt16, exclusive: Bool, noAck: Bool, arguments: AMQPTable,
         continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation) {
        self.queue = queue
        self.tag = tag
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.noAck = noAck
        self.arguments = arguments
        self.continuation = continuation
    }

    func yield(_ delivery: AMQPDelivery) {
        continuation.yield(delivery)
    }

    func finish(_ error: AMQPError?) {
        if let error {
            continuation.finish(throwing: error)
        } else {
            continuation.finish()
        }
    }
}

/// Where a delivery came from.
struct DeliveryInfo: Sendable {
    var deliveryTag: UInt64
    var redelivered: Bool
    var exchange: String
    var routingKey: String
    var consumerTag: String
    var messageCount: UInt32?
}

/// Settles deliveries of one channel incarnation.
struct DeliveryAcknowledger: Sendable {
    let connection: AMQPConnection
    let channel: UInt16
    let generation: UInt64
}

/// A message delivered by the broker, to be acknowledged, rejected or returned.
public struct AMQPDelivery: Sendable {
    /// The message body.
    public var body: Data
    /// The message properties and headers.
    public var properties: AMQPProperties
    /// The exchange the message was published to.
    public var exchange: String { info.exchange }
    /// The routing key it was published with.
    public var routingKey: String { info.routingKey }
    /// Whether the broker delivered it before (to this or another consumer) without an acknowledgement.
    public var redelivered: Bool { info.redelivered }
    /// The delivery tag on its channel.
    public var deliveryTag: UInt64 { info.deliveryTag }
    /// The consumer that received it (empty for `basic.get`).
    public var consumerTag: String { info.consumerTag }
    /// For `basic.get`: messages left in the queue.
    public var messageCount: UInt32? { info.messageCount }

    let info: DeliveryInfo
    let acknowledger: DeliveryAcknowledger?

    init(body: Data, properties: AMQPProperties, info: DeliveryInfo, acknowledger: DeliveryAcknowledger?) {
        self.body = body
        self.properties = properties
        self.info = info
        self.acknowledger = acknowledger
    }

    /// Acknowledges the delivery (and, with `multiple`, every earlier one on its channel).
    ///
    /// Acknowledgements are one-way in AMQP: this hands it to the connection and returns. It throws
    /// `.staleDelivery` when the connection was recovered since the delivery: the broker has already put the
    /// message back, and it will come again.
    public func ack(multiple: Bool = false) throws(AMQPError) {
        try settle(.ack(multiple: multiple))
    }

    /// Negatively acknowledges the delivery: back to the queue with `requeue`, else dead-lettered or dropped.
    public func nack(requeue: Bool, multiple: Bool = false) throws(AMQPError) {
        try settle(.nack(requeue: requeue, multiple: multiple))
    }

    /// Rejects the delivery: back to the queue with `requeue`, else dead-lettered or dropped.
    public func reject(requeue: Bool) throws(AMQPError) {
        try settle(.reject(requeue: requeue))
    }

    private func settle(_ settlement: Settlement) throws(AMQPError) {
        guard let acknowledger else {
            throw AMQPError(.invalidArgument, operation: "settle delivery", detail: "the delivery was taken with automatic acknowledgement")
        }
        guard acknowledger.generation == acknowledger.connection.shared.generation.load(ordering: .relaxed) else {
            throw AMQPError(.staleDelivery, operation: "settle delivery \(deliveryTag)")
        }
        let channel = acknowledger.channel, tag = info.deliveryTag, generation = acknowledger.generation
        let logger = acknowledger.connection.logger
        let accepted = acknowledger.connection.thread.submit { core in
            if case .failure(let error) = core.settle(settlement, channel: channel, deliveryTag: tag, generation: generation),
               error.code != .staleDelivery {
                logger.warning("amqp: settling a delivery failed", metadata: ["error": "\(error)"])
            }
        }
        if !accepted { throw AMQPError(.closedByApplication, operation: "settle delivery \(deliveryTag)") }
    }
}

/// The deliveries of one consumer, as an asynchronous sequence.
///
/// The sequence ends when the consumer is cancelled or the connection closed by the application, and throws
/// when the broker cancels the consumer or the connection is lost for good. A connection that recovers
/// resumes the consumer on a fresh channel: the sequence goes on, and deliveries not acknowledged before the
/// loss come again, marked redelivered.
public final class AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    public typealias Failure = any Error

    let connection: AMQPConnection
    let state: ConsumerState
    let stream: AsyncThrowingStream<AMQPDelivery, any Error>

    init(connection: AMQPConnection, state: ConsumerState, stream: AsyncThrowingStream<AMQPDelivery, any Error>) {
        self.connection = connection
        self.state = state
        self.stream = stream
    }

    /// The queue consumed from.
    public var queue: String { state.queue }

    /// Stops the consumer. Deliveries not yet acknowledged go back to the queue; the sequence ends.
    public func cancel() async throws(AMQPError) {
        let state = self.state
        try await connection.perform { core in core.cancel(state) }.get()
    }

    /// Stops deliveries (`basic.cancel`) and ends the sequence, but keeps the channel open: deliveries already
    /// in hand can still be acknowledged, which is how a worker drains. Those that were sent ahead and not yet
    /// read go back to the queue when the channel closes (``cancel()`` or the connection's close).
    public func stopDeliveries() async throws(AMQPError) {
        let state = self.state
        try await connection.perform { core in core.stopDeliveries(state) }.get()
    }

    /// Iterates over the deliveries.
    public func makeAsyncIterator() -> AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator {
        stream.makeAsyncIterator()
    }
}
