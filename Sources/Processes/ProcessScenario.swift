import EventCore
import Foundation

/// A given/when/then harness for process authors: start from past events or past triggers, let a trigger or a
/// timeout arrive (with a manual clock that jumps hours or days), then check exactly what was written.
///
/// ```swift
/// let clock = ManualClock()
/// try await ProcessScenario(OrderFulfillmentProcess(), businessID: "order-1", clock: clock)
///     .given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"))
///     .whenTimeoutFires(after: .seconds(3 * 86_400))
///     .then(status: .failed(reason: "the process passed its deadline"))
/// ```
///
/// Each scenario runs on its own in-memory store.
public struct ProcessScenario<Definition: ProcessDefinition>: Sendable where Definition.Event: Equatable {
    private enum Given: Sendable {
        case events([ProcessEvent<Definition.Event>])
        case trigger(Definition.Trigger)
        case advance(Duration)
        case pendingTimeoutFires
    }

    /// The process manager under test.
    public let definition: Definition
    /// The business id of the process.
    public let businessID: String
    /// The clock triggers and timeouts are stamped with.
    public let clock: ManualClock
    private var history: [Given] = []

    /// A scenario with no history.
    public init(_ definition: Definition, businessID: String, clock: ManualClock = ManualClock()) {
        self.definition = definition
        self.businessID = businessID
        self.clock = clock
    }

    /// Past events of the process stream, stored as they are.
    public func given(_ events: ProcessEvent<Definition.Event>...) -> Self {
        appending(.events(events))
    }

    /// Past triggers, each handled at the clock's time then.
    public func given(triggers: Definition.Trigger...) -> Self {
        var copy = self
        for trigger in triggers { copy.history.append(.trigger(trigger)) }
        return copy
    }

    /// The clock moves forward by `duration` before what follows.
    public func givenTime(advancedBy duration: Duration) -> Self {
        appending(.advance(duration))
    }

    /// The pending timeout fires at the clock's time (after any `givenTime(advancedBy:)`).
    public func givenPendingTimeoutFired() -> Self {
        appending(.pendingTimeoutFires)
    }

    private func appending(_ given: Given) -> Self {
        var copy = self
        copy.history.append(given)
        return copy
    }

    /// Replays the history, then handles `trigger` after the clock moved by `delay`.
    public func when(_ trigger: Definition.Trigger, after delay: Duration = .zero) async throws -> Outcome {
        try await run { runtime in
            self.clock.advance(by: delay)
            let command = try AdvanceProcess(definition: self.definition, businessID: self.businessID, trigger: trigger, at: self.clock.now)
            return (try await runtime.execute(command), nil)
        }
    }

    /// Replays the history, moves the clock by `delay`, and lets the pending timeout arrive.
    /// - Throws: ``ScenarioFailure`` when no timeout is pending.
    public func whenTimeoutFires(after delay: Duration) async throws -> Outcome {
        try await run { runtime in
            self.clock.advance(by: delay)
            let snapshot = try await self.definition.snapshot(businessID: self.businessID, in: runtime.executor.store)
            guard let pending = snapshot.lifecycle.pendingTimeout else {
                throw ScenarioFailure("no timeout is pending; the process is \(snapshot.status)")
            }
            let firing = try await runtime.fireTimeout(ScheduledTimeout(processID: snapshot.processID, pending), at: self.clock.now)
            return (firing.execution, firing)
        }
    }

    /// Replays the history, moves the clock by `delay`, and lets the timeout `timeoutID` arrive, pending or
    /// not (to check that a stale or cancelled timeout changes nothing).
    public func whenTimeoutArrives(_ timeoutID: String, after delay: Duration) async throws -> Outcome {
        try await run { runtime in
            self.clock.advance(by: delay)
            let processID = try Definition.processID(for: self.businessID)
            let timeout = ScheduledTimeout(processID: processID, timeoutID: timeoutID, dueAt: self.clock.now, attempt: 0)
            let firing = try await runtime.fireTimeout(timeout, at: self.clock.now)
            return (firing.execution, firing)
        }
    }

    private func run(_ body: @Sendable (ProcessRuntime) async throws -> (ProcessExecution?, TimeoutFiring?)) async throws -> Outcome {
        let store = InMemoryEventStore(configuration: .init(now: { [clock] in clock.now }))
        let runtime = ProcessRuntime(executor: CommandExecutor(store: store))
        let processID = try Definition.processID(for: businessID)
        let codec = EventCodec()
        for given in history {
            switch given {
            case .events(let events):
                var new: [NewEvent] = []
                for event in events {
                    let encoded = try codec.encode(event)
                    new.append(NewEvent(streamID: processID, eventType: encoded.eventType, payload: encoded.payload))
                }
                _ = try await store.append(AppendRequest(events: new))
            case .trigger(let trigger):
                _ = try await runtime.execute(try AdvanceProcess(definition: definition, businessID: businessID, trigger: trigger, at: clock.now))
            case .advance(let duration):
                clock.advance(by: duration)
            case .pendingTimeoutFires:
                let snapshot = try await definition.snapshot(businessID: businessID, in: store)
                guard let pending = snapshot.lifecycle.pendingTimeout else {
                    throw ScenarioFailure("given a pending timeout firing, but no timeout is pending; the process is \(snapshot.status)")
                }
                _ = try await runtime.fireTimeout(ScheduledTimeout(processID: processID, pending), at: clock.now)
            }
        }
        let (execution, firing) = try await body(runtime)
        var written: [ProcessEvent<Definition.Event>] = []
        if let execution, execution.result.outcome == .committed {
            for stored in execution.result.events {
                if let event = try codec.decode(stored, as: ProcessEvent<Definition.Event>.self) { written.append(event) }
            }
        }
        let process = try await definition.snapshot(businessID: businessID, in: store)
        return Outcome(written: written, execution: execution, firing: firing, process: process, store: store)
    }

    /// What the trigger or timeout did.
    public struct Outcome: Sendable {
        /// The events written, in order.
        public let written: [ProcessEvent<Definition.Event>]
        /// The execution, for the timeouts it scheduled; `nil` for a timeout that was not yet due.
        public let execution: ProcessExecution?
        /// What the timeout did, when a timeout arrived.
        public let firing: TimeoutFiring?
        /// The process after the trigger or timeout.
        public let process: ProcessSnapshot<Definition.State>
        /// The store, for further checks.
        public let store: InMemoryEventStore

        /// Requires exactly `expected` to have been written, in order.
        @discardableResult
        public func then(written expected: [ProcessEvent<Definition.Event>], file: String = #fileID, line: Int = #line) throws -> Self {
            guard expected == written else {
                throw ScenarioFailure("expected \(expected), written \(written)", file: file, line: line)
            }
            return self
        }

        /// Requires nothing to have been written.
        @discardableResult
        public func thenNothingWritten(file: String = #fileID, line: Int = #line) throws -> Self {
            guard written.isEmpty else { throw ScenarioFailure("expected no events, written \(written)", file: file, line: line) }
            return self
        }

        /// Requires the process to be in `status` afterwards.
        @discardableResult
        public func then(status expected: ProcessStatus, file: String = #fileID, line: Int = #line) throws -> Self {
            guard process.status == expected else {
                throw ScenarioFailure("expected the process to be \(expected), it is \(process.status)", file: file, line: line)
            }
            return self
        }

        /// Requires the timeout to have been reported as arriving early, due at `dueAt`.
        @discardableResult
        public func thenNotYetDue(until dueAt: Date, file: String = #fileID, line: Int = #line) throws -> Self {
            guard case .notYetDue(let date)? = firing?.outcome, date == dueAt else {
                throw ScenarioFailure("expected the timeout to be not yet due until \(dueAt), it did \(String(describing: firing?.outcome))", file: file, line: line)
            }
            return try thenNothingWritten(file: file, line: line)
        }
    }
}

/// A scenario expectation that did not hold.
public struct ScenarioFailure: Error, CustomStringConvertible {
    /// What was expected and what happened.
    public var message: String
    /// Where the expectation was written.
    public var file: String
    /// Its line.
    public var line: Int

    /// Creates the failure.
    public init(_ message: String, file: String = #fileID, line: Int = #line) {
        self.message = message
        self.file = file
        self.line = line
    }

    /// `file:line: message`.
    public var description: String { "\(file):\(line): \(message)" }
}
