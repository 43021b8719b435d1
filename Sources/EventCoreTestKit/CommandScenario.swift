import EventCore

/// A given/when/then harness for commands: start from some history, execute a command on an in-memory store,
/// then check what it wrote or why it refused.
///
/// ```swift
/// try await CommandScenario<SampleBank.Transfer>()
///     .given(.deposited(amount: 50), in: a)
///     .when(SampleBank.Transfer(from: a, to: b, amount: 20))
///     .then(written: [(a, .withdrawn(amount: 20)), (b, .deposited(amount: 20))])
/// ```
public struct CommandScenario<C: Command>: Sendable where C.Event: Equatable {
    private var history: [(StreamID, C.Event)]
    private var options: ExecutionOptions

    /// A scenario with no history.
    public init() {
        history = []
        options = ExecutionOptions()
    }

    /// Adds `events` to the history of `stream`.
    public func given(_ events: C.Event..., in stream: StreamID) -> Self {
        var copy = self
        copy.history += events.map { (stream, $0) }
        return copy
    }

    /// Adds `events` (stream, event) to the history, in order.
    public func given(_ events: [(StreamID, C.Event)]) -> Self {
        var copy = self
        copy.history += events
        return copy
    }

    /// Executes the command with these options (for example an idempotency key).
    public func with(_ options: ExecutionOptions) -> Self {
        var copy = self
        copy.options = options
        return copy
    }

    /// Writes the history to a fresh in-memory store, executes `command` once and records what happened.
    public func when(_ command: C) async throws -> Outcome {
        let store = InMemoryEventStore()
        let codec = EventCodec()
        if !history.isEmpty {
            var events: [NewEvent] = []
            for (stream, event) in history {
                let encoded = try codec.encode(event)
                events.append(NewEvent(streamID: stream, eventType: encoded.eventType, payload: encoded.payload))
            }
            _ = try await store.append(AppendRequest(events: events))
        }
        let executor = CommandExecutor(store: store, clock: ImmediateClock(), unitRandom: { 0 })
        do {
            let result = try await executor.execute(command, options: options)
            var written: [(StreamID, C.Event)] = []
            for stored in result.events {
                if let event = try codec.decode(stored, as: C.Event.self) { written.append((stored.streamID, event)) }
            }
            return Outcome(result: .success(result), written: written, store: store)
        } catch {
            return Outcome(result: .failure(error), written: [], store: store)
        }
    }

    /// What the command did.
    public struct Outcome: Sendable {
        /// The executor's result or the error it threw.
        public let result: Result<CommandResult, any Error>
        /// The events written, decoded, in order.
        public let written: [(StreamID, C.Event)]
        /// The store, for further checks.
        public let store: InMemoryEventStore

        /// Requires exactly `expected` (stream, event) pairs to have been written, in order.
        @discardableResult
        public func then(written expected: [(StreamID, C.Event)], file: String = #fileID, line: Int = #line) throws -> Self {
            if case .failure(let error) = result {
                throw ContractViolation("expected events to be written, the command failed: \(error)", file: file, line: line)
            }
            let matches = expected.count == written.count
                && zip(expected, written).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            if !matches {
                throw ContractViolation("expected \(describe(expected)), written \(describe(written))", file: file, line: line)
            }
            return self
        }

        /// Requires the command to have decided to write nothing.
        @discardableResult
        public func thenNothingWritten(file: String = #fileID, line: Int = #line) throws -> Self {
            switch result {
            case .failure(let error):
                throw ContractViolation("expected no events, the command failed: \(error)", file: file, line: line)
            case .success(let value):
                try require(value.outcome == .noOp && written.isEmpty, "expected no events, got \(value.outcome) with \(describe(written))", file: file, line: line)
            }
            return self
        }

        /// Requires the command to have failed with an error equal to `expected`; nothing may have been written.
        @discardableResult
        public func thenFails<E: Error & Equatable>(with expected: E, file: String = #fileID, line: Int = #line) throws -> Self {
            switch result {
            case .success(let value):
                throw ContractViolation("expected the command to fail with \(expected), it returned \(value.outcome) with \(describe(written))", file: file, line: line)
            case .failure(let error):
                guard let typed = error as? E, typed == expected else {
                    throw ContractViolation("expected the command to fail with \(expected), it failed with \(error)", file: file, line: line)
                }
            }
            return self
        }

        /// The executor's result; throws a ``ContractViolation`` if the command failed.
        public func requireResult(file: String = #fileID, line: Int = #line) throws -> CommandResult {
            switch result {
            case .success(let value): return value
            case .failure(let error): throw ContractViolation("the command failed: \(error)", file: file, line: line)
            }
        }

        private func describe(_ pairs: [(StreamID, C.Event)]) -> String {
            "[" + pairs.map { "\($0.0): \($0.1)" }.joined(separator: ", ") + "]"
        }
    }
}
