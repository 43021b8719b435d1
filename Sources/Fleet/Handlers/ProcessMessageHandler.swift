import EventCore
import Foundation
import Processes

/// Runs the process commands a router builds from messages (`AdvanceOrderProcess` and the like).
///
/// The command runs with the message's idempotency key, so a message handled twice has one effect: the
/// second time the store reports the first execution's events, and they are published again (consumers
/// deduplicate by message id). Timeouts the command scheduled travel through the delay queues.
public struct ProcessMessageHandler: MessageHandler {
    let router: any ProcessEventRouter
    let runtime: ProcessRuntime
    let now: @Sendable () -> Date

    /// A handler for `router`'s events.
    public init(router: any ProcessEventRouter, runtime: ProcessRuntime, now: @escaping @Sendable () -> Date = { Date() }) {
        self.router = router
        self.runtime = runtime
        self.now = now
    }

    public func handle(_ envelope: Envelope) async throws -> HandlerOutcome {
        var metadata = EventMetadata()
        metadata.correlationID = envelope.correlationID
        metadata.causationID = envelope.messageID
        metadata.sourceMessageID = envelope.messageID
        metadata.traceparent = envelope.traceparent
        let incoming = IncomingEvent(eventType: envelope.eventType, payload: envelope.body, messageID: envelope.messageID,
                                     receivedAt: now(), metadata: metadata)
        let routed: RoutedCommand?
        do {
            routed = try router.route(incoming)
        } catch {
            let code: EnvelopeError.Code = switch error.code {
            case .unknownEventType: .unknownEventType
            case .invalidPayload: .invalidPayload
            case .correlationMismatch: .correlationMismatch
            }
            throw EnvelopeError(code, error.message)
        }
        guard let routed else { return .noEffect }
        let execution: ProcessExecution
        do {
            execution = try await runtime.execute(routed)
        } catch let error as EventStoreError where !error.isRetryable {
            throw EnvelopeError(.invalidPayload, error.description)
        }
        return HandlerOutcome(execution)
    }
}

extension HandlerOutcome {
    /// What a process execution leaves to publish: its events, and its timeouts through the delay queues.
    public init(_ execution: ProcessExecution) {
        let effect: Effect
        switch execution.result.outcome {
        case .committed: effect = .committed
        case .duplicate: effect = .duplicate
        case .noOp: effect = .noEffect
        }
        self.init(
            effect: effect,
            publications: execution.eventsToPublish.map(Publication.init(stored:)),
            delayed: execution.timeoutsToSchedule.map(DelayedMessage.init(timeout:)),
            conflictsRetried: execution.result.conflictsRetried)
    }
}

extension DelayedMessage {
    /// The timeout message for `timeout`: a `ProcessTimeout` whose body is the timeout, due at its due time.
    /// Its message id is the timeout id, which is unique per scheduling decision.
    public init(timeout: ScheduledTimeout) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        let body = (try? encoder.encode(timeout)) ?? Data()
        self.init(
            envelope: Envelope(messageID: "timeout:\(timeout.timeoutID)", eventType: TimeoutMessageHandler.eventType,
                               correlationID: timeout.processID.description, body: body),
            destination: nil, dueAt: timeout.dueAt)
    }
}

/// Handles timeout messages arriving from the delay queues: runs `ProcessTimeoutCommand`, which writes
/// `RetryScheduled` (and the next timeout) or `Failed`, and nothing for a timeout that was cancelled,
/// superseded or arrives after the process ended.
public struct TimeoutMessageHandler: MessageHandler {
    /// The type name of timeout messages.
    public static let eventType = "ProcessTimeout"
    /// The consumer name in idempotency keys.
    public var consumer: String
    let runtime: ProcessRuntime
    let now: @Sendable () -> Date

    /// A handler firing timeouts through `runtime`.
    public init(runtime: ProcessRuntime, consumer: String = "timeouts", now: @escaping @Sendable () -> Date = { Date() }) {
        self.runtime = runtime
        self.consumer = consumer
        self.now = now
    }

    /// The timeout a message carries, checked against the message's type and correlation id.
    private func timeout(in envelope: Envelope) throws(EnvelopeError) -> ScheduledTimeout {
        guard envelope.eventType == Self.eventType else {
            throw EnvelopeError(.unknownEventType, "the timeouts queue takes \(Self.eventType) messages, not \(envelope.eventType)")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        let timeout: ScheduledTimeout
        do {
            timeout = try decoder.decode(ScheduledTimeout.self, from: envelope.body)
        } catch {
            throw EnvelopeError(.invalidPayload, "not a timeout: \(String(describing: error).prefix(200))")
        }
        if let claimed = envelope.correlationID, !claimed.isEmpty, claimed != timeout.processID.description {
            throw EnvelopeError(.correlationMismatch, "the correlation id \(String(claimed.prefix(100)).debugDescription) names another process than the timeout's \(timeout.processID)")
        }
        return timeout
    }

    /// A timeout the worker's stream cache shows cancelled, superseded, fired, or of a process that has ended
    /// (``ProcessRuntime/settledReasonToIgnore(_:)``). A malformed message is not obsolete: handling it
    /// dead-letters it with its reason.
    public func isObsolete(_ envelope: Envelope) -> Bool {
        guard let timeout = try? timeout(in: envelope) else { return false }
        return runtime.settledReasonToIgnore(timeout) != nil
    }

    public func handle(_ envelope: Envelope) async throws -> HandlerOutcome {
        let timeout = try timeout(in: envelope)
        let key = try IdempotencyKey(consumer: consumer, messageID: envelope.messageID)
        var metadata = EventMetadata()
        metadata.correlationID = timeout.processID.description
        metadata.causationID = envelope.messageID
        metadata.sourceMessageID = envelope.messageID
        let firing = try await runtime.fireTimeout(timeout, at: now(), options: ExecutionOptions(idempotencyKey: key, metadata: metadata))
        switch firing.outcome {
        case .notYetDue(let dueAt):
            // The delay levels round up, so this only happens with clock skew between machines: wait again.
            var again = envelope
            again.dueAt = dueAt
            return HandlerOutcome(effect: .noEffect, delayed: [DelayedMessage(envelope: again, destination: nil, dueAt: dueAt)])
        default:
            guard let execution = firing.execution else { return .noEffect }
            return HandlerOutcome(execution)
        }
    }
}

/// Runs a saga for each request message: the message body is the saga's definition (for the travel booking
/// saga: the trip and its three bookings). A request delivered twice resumes the same saga rather than
/// starting another; the saga's events are published when it ends.
public struct SagaMessageHandler<Definition: SagaDefinition>: MessageHandler {
    /// The type name of request messages.
    public let eventType: String
    let runner: SagaRunner

    /// A handler starting `Definition` sagas from `eventType` messages.
    public init(eventType: String, runner: SagaRunner) {
        self.eventType = eventType
        self.runner = runner
    }

    public func handle(_ envelope: Envelope) async throws -> HandlerOutcome {
        guard envelope.eventType == eventType else {
            throw EnvelopeError(.unknownEventType, "expected \(eventType), not \(envelope.eventType)")
        }
        let definition: Definition
        do {
            definition = try JSONDecoder().decode(Definition.self, from: envelope.body)
        } catch {
            throw EnvelopeError(.invalidPayload, "not a \(Definition.sagaType) request: \(String(describing: error).prefix(200))")
        }
        let sagaID: StreamID
        do {
            sagaID = try Definition.sagaID(for: definition.businessID)
        } catch {
            throw EnvelopeError(.invalidPayload, error.description)
        }
        if let claimed = envelope.correlationID, !claimed.isEmpty, claimed != definition.businessID, claimed != sagaID.description {
            throw EnvelopeError(.correlationMismatch, "the correlation id \(String(claimed.prefix(100)).debugDescription) names another saga than the request's \(String(definition.businessID.prefix(100)).debugDescription)")
        }
        let existing = try await runner.runtime.executor.store.read(stream: sagaID)
        let report = try await runner.run(definition)
        switch report.phase {
        case .completed, .compensated, .needsAttention:
            break
        case .notStarted, .running, .compensating:
            // A step could not finish now (a hot resource kept conflicting): the message comes back later and
            // the saga resumes where it stopped.
            throw SagaNotFinished(sagaID: report.sagaID, phase: "\(report.phase)")
        }
        let events = try await runner.runtime.executor.store.read(stream: report.sagaID).events
        return HandlerOutcome(effect: existing.events.isEmpty ? .committed : .duplicate, publications: events.map(Publication.init(stored:)))
    }
}

/// A saga that stopped before its end; the worker retries the request later.
public struct SagaNotFinished: Error, Sendable, CustomStringConvertible {
    /// The saga stream.
    public var sagaID: StreamID
    /// Where it stopped.
    public var phase: String
    public var description: String { "saga \(sagaID) stopped while \(phase); it resumes when the request comes back" }
}
