import EventCore
import Foundation

/// A domain event as it arrives from outside (a broker message): type name, JSON payload, message id.
public struct IncomingEvent: Sendable, Hashable {
    /// The event's type name, such as `PaymentConfirmed`.
    public var eventType: String
    /// The JSON payload.
    public var payload: Data
    /// The message id; with the consumer's name it makes the idempotency key.
    public var messageID: String
    /// When the worker received it: the time the process decides at.
    public var receivedAt: Date
    /// Correlation, causation and trace context carried by the message.
    public var metadata: EventMetadata

    /// Creates the value.
    public init(eventType: String, payload: Data, messageID: String, receivedAt: Date, metadata: EventMetadata = EventMetadata()) {
        self.eventType = eventType
        self.payload = payload
        self.messageID = messageID
        self.receivedAt = receivedAt
        self.metadata = metadata
    }
}

/// A command built from a message, ready to execute with the message's idempotency key and metadata.
public struct RoutedCommand: Sendable {
    /// The command's type name, for logs.
    public let commandName: String
    /// The process the command advances.
    public let processID: StreamID
    /// The idempotency key (consumer and message id) and the metadata stamped on the events written.
    public let options: ExecutionOptions
    private let run: @Sendable (CommandExecutor, ExecutionOptions) async throws -> CommandResult

    /// Wraps `command`.
    public init<C: Command>(_ command: C, processID: StreamID, options: ExecutionOptions) {
        self.commandName = String(describing: C.self)
        self.processID = processID
        self.options = options
        self.run = { executor, options in try await executor.execute(command, options: options) }
    }

    /// Executes the command with ``options``.
    public func execute(on executor: CommandExecutor) async throws -> CommandResult {
        try await run(executor, options)
    }
}

/// Turns incoming events into process commands: what a worker asks after decoding a message.
public protocol ProcessEventRouter: Sendable {
    /// The type names this router knows (it may still ignore some of them).
    var eventTypes: Set<String> { get }

    /// The command to run for `event`, or `nil` when the event is known but concerns no process step.
    /// - Throws: ``RoutingError`` for an unknown type or a payload that does not decode or validate.
    func route(_ event: IncomingEvent) throws(RoutingError) -> RoutedCommand?
}

/// Why an incoming event could not be turned into a command. Not retryable: the message is dead-lettered.
public struct RoutingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: String, Sendable, Hashable {
        /// No router knows the type name.
        case unknownEventType
        /// The payload did not decode, or a field failed validation.
        case invalidPayload
        /// The message's correlation id names another process than its payload does.
        case correlationMismatch
    }

    /// The kind of failure.
    public var code: Code
    /// The type name of the event.
    public var eventType: String
    /// A short explanation without payload contents.
    public var message: String

    /// Creates the error.
    public init(_ code: Code, eventType: String, _ message: String) {
        self.code = code
        self.eventType = eventType
        self.message = message
    }

    /// `RoutingError(invalidPayload) for PaymentConfirmed: ...`.
    public var description: String { "RoutingError(\(code.rawValue)) for \(eventType.debugDescription): \(message)" }
}
