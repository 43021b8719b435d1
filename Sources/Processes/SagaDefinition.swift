import EventCore
import Foundation

/// A saga: ordered steps, each a command with a compensating command.
///
/// The definition is stored (as JSON) when the saga starts, and its steps are rebuilt from it, so a runner
/// that takes over after a crash runs exactly the steps the saga began with. ``steps()`` must therefore be
/// a pure function of the definition.
public protocol SagaDefinition: Codable, Sendable {
    /// The kind of saga, the prefix of its stream ids, such as `travel-booking`.
    static var sagaType: String { get }
    /// The business id the saga is about.
    var businessID: String { get }
    /// The steps, in the order they run forward.
    func steps() -> [SagaStep]
    /// How often a compensation the business refuses is retried, and how long to wait in between; when it is
    /// still refused, the saga needs attention. The same policy bounds the in-place retries of a transient
    /// store failure (a version conflict, an unreachable store) of a step or a compensation: past it the run
    /// throws and leaves the saga where it stands, never failed or needing attention.
    var retryPolicy: RetryPolicy { get }
}

extension SagaDefinition {
    /// Three retries, 100 ms doubling to at most 5 s, no jitter.
    public var retryPolicy: RetryPolicy {
        RetryPolicy(maxRetries: 3, backoff: .exponential(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(5)), jitter: 0)
    }

    /// The saga stream: `<sagaType>-<businessID>`.
    public static func sagaID(for businessID: String) throws(EventStoreError) -> StreamID {
        try ProcessID.derive(processType: sagaType, businessID: businessID)
    }
}

/// One step of a saga: a command and the command that undoes it.
public struct SagaStep: Sendable {
    /// The step's name, such as `book_hotel`.
    public var name: String
    /// What the step does.
    public var command: SagaCommand
    /// What undoes it.
    public var compensation: SagaCommand

    /// Creates a step.
    public init<Action: Command, Compensation: Command>(name: String, command: Action, compensation: Compensation) {
        self.name = name
        self.command = SagaCommand(command)
        self.compensation = SagaCommand(compensation)
    }
}

/// A command of any type, ready to execute.
public struct SagaCommand: Sendable {
    /// The command's type name, for logs.
    public let commandName: String
    private let run: @Sendable (CommandExecutor, ExecutionOptions) async throws -> CommandResult

    /// Wraps `command`.
    public init<C: Command>(_ command: C) {
        commandName = String(describing: C.self)
        run = { executor, options in try await executor.execute(command, options: options) }
    }

    /// Executes the command.
    public func execute(on executor: CommandExecutor, options: ExecutionOptions) async throws -> CommandResult {
        try await run(executor, options)
    }
}
