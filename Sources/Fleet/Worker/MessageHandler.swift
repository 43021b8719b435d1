import Foundation

/// Handles the messages of the queues routed to it in `topology.json`.
///
/// A handler turns an envelope into an effect on the event store (a command executed with the message's
/// idempotency key) and says what must leave the worker because of it. The worker acknowledges the message
/// only after every publication is confirmed, so a handler must give the same publications again when the
/// same message comes twice (the store reports the first execution's events as a duplicate).
///
/// Throw ``EnvelopeError`` for a message that can never succeed (it is dead-lettered at once with its code);
/// any other error is taken as transient and the message is retried through the delay queues.
public protocol MessageHandler: Sendable {
    /// Handles one message.
    func handle(_ envelope: Envelope) async throws -> HandlerOutcome

    /// Whether handling `envelope` is already known to change nothing and publish nothing, from what the handler
    /// holds in memory, without a store or broker call: a timeout whose process has moved past it, say. The
    /// worker then acknowledges the message at once instead of holding it until its due time and handling it.
    /// Answer true only where no later state can make the message matter; when unsure, false (the default).
    func isObsolete(_ envelope: Envelope) -> Bool
}

extension MessageHandler {
    /// Not known: the message is handled.
    public func isObsolete(_ envelope: Envelope) -> Bool { false }
}

/// What handling a message produced.
public struct HandlerOutcome: Sendable, Equatable {
    /// What the store did.
    public enum Effect: String, Sendable, Equatable {
        /// New events were committed.
        case committed
        /// The message had been handled before; its publications are those of the first time.
        case duplicate
        /// The message changed nothing (an event the process ignores, a timeout no longer pending).
        case noEffect
    }

    /// What the store did.
    public var effect: Effect
    /// Events to publish now (process events for other services).
    public var publications: [Publication]
    /// Messages to deliver later through the delay queues (timeouts).
    public var delayed: [DelayedMessage]
    /// Version conflicts the command retried.
    public var conflictsRetried: Int

    /// An outcome.
    public init(effect: Effect, publications: [Publication] = [], delayed: [DelayedMessage] = [], conflictsRetried: Int = 0) {
        self.effect = effect
        self.publications = publications
        self.delayed = delayed
        self.conflictsRetried = conflictsRetried
    }

    /// Nothing happened and nothing leaves.
    public static let noEffect = HandlerOutcome(effect: .noEffect)
}

/// A message to publish to an exchange.
public struct Publication: Sendable, Equatable {
    /// The message.
    public var envelope: Envelope
    /// The exchange; nil for the fleet's process events exchange.
    public var exchange: String?
    /// The routing key.
    public var routingKey: String

    /// A publication.
    public init(envelope: Envelope, exchange: String? = nil, routingKey: String) {
        self.envelope = envelope
        self.exchange = exchange
        self.routingKey = routingKey
    }
}

/// A message to deliver to a queue at a given time.
public struct DelayedMessage: Sendable, Equatable {
    /// The message.
    public var envelope: Envelope
    /// The queue it goes to when due; nil for the fleet's timeouts queue.
    public var destination: String?
    /// When it is due.
    public var dueAt: Date

    /// A delayed message.
    public init(envelope: Envelope, destination: String? = nil, dueAt: Date) {
        self.envelope = envelope
        self.destination = destination
        self.dueAt = dueAt
    }
}
