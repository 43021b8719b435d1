import EventCore
import Foundation

/// The command that moves any process one trigger further: it folds the process stream (and the
/// definition's related streams), starts the process if needed, asks the definition to decide, and writes the
/// decision together with the lifecycle and timeout events it implies, in one append.
///
/// What it writes, in order: `ProcessStarted` and the first `TimeoutScheduled` for a new process; the
/// definition's events; on progress a `TimeoutCancelled` for the pending timeout and a fresh
/// `TimeoutScheduled`; on completion or failure a `TimeoutCancelled` and `ProcessCompleted` / `ProcessFailed`.
/// A trigger for an ended process writes nothing; a trigger past the deadline fails the process.
public struct AdvanceProcess<Definition: ProcessDefinition>: Command {
    /// The process manager.
    public var definition: Definition
    /// The business id the process is about.
    public var businessID: String
    /// What happened.
    public var trigger: Definition.Trigger
    /// When it is handled: the time every date in the decision derives from.
    public var now: Date
    /// The process stream.
    public let processID: StreamID

    /// Creates the command.
    /// - Throws: ``EventStoreError/Code/invalidStreamID`` when the business id makes no valid stream id.
    public init(definition: Definition, businessID: String, trigger: Definition.Trigger, at now: Date) throws(EventStoreError) {
        self.definition = definition
        self.businessID = businessID
        self.trigger = trigger
        self.now = now
        self.processID = try Definition.processID(for: businessID)
    }

    /// The process's lifecycle and the definition's state.
    public typealias State = ProcessSnapshot<Definition.State>
    /// The lifecycle events and the definition's events.
    public typealias Event = ProcessEvent<Definition.Event>

    /// The process stream, then the related streams.
    public var readStreams: [StreamID] { [processID] + definition.relatedStreams(businessID: businessID) }

    /// A process that has not started.
    public var initialState: State {
        ProcessSnapshot(lifecycle: ProcessLifecycle(processID: processID), state: definition.initialState)
    }

    /// Unused: the fold needs the stream of each event.
    public func apply(_ state: inout State, _ event: Event) {}

    /// Lifecycle events of the process stream go to the lifecycle, the definition's events to its state.
    public func apply(_ state: inout State, _ event: Event, recorded: StoredEvent) {
        state.lifecycle.count(recorded)
        switch event {
        case .lifecycle(let lifecycle):
            if recorded.streamID == processID { state.lifecycle.apply(lifecycle) }
        case .domain(let domain):
            definition.apply(domain, to: &state.state)
        }
    }

    /// See the type's description.
    public func handle(_ state: State, context: CommandContext) throws -> [StreamWrite<Event>] {
        var process = state
        var planned = ProcessEventPlan<Definition.Event>(processID: processID, version: context.versions[processID] ?? 0)
        switch process.status {
        case .completed, .failed:
            return []
        case .notStarted:
            guard definition.startsProcess(on: trigger) else { return [] }
            let policy = definition.timeoutPolicy
            let started = ProcessStarted(
                processType: Definition.processType,
                businessID: businessID,
                startedAt: now,
                deadline: policy.overallTimeout.map { now.addingTimeInterval($0.timeInterval) },
                retryPolicy: policy.retryPolicy
            )
            planned.append(.lifecycle(.started(started)), to: &process.lifecycle)
            if let due = policy.nextDue(after: now, deadline: started.deadline) {
                planned.scheduleTimeout(dueAt: due, attempt: 0, to: &process.lifecycle)
            }
        case .running:
            break
        }
        if let deadline = process.lifecycle.started?.deadline, now >= deadline {
            planned.end(.failed(reason: "the process passed its deadline"), at: now, to: &process.lifecycle)
            return try planned.writes(in: context)
        }
        let decision = try definition.decide(trigger, in: process, at: now)
        for event in decision.events {
            planned.append(.domain(event), to: &process.lifecycle)
            definition.apply(event, to: &process.state)
        }
        switch decision.outcome {
        case .running:
            if decision.madeProgress, let due = definition.timeoutPolicy.nextDue(after: now, deadline: process.lifecycle.started?.deadline),
               definition.timeoutPolicy.stepTimeout != nil {
                if let pending = process.lifecycle.pendingTimeout {
                    planned.append(.lifecycle(.timeoutCancelled(TimeoutCancelled(timeoutID: pending.timeoutID, reason: "superseded: the process made progress"))), to: &process.lifecycle)
                }
                planned.scheduleTimeout(dueAt: due, attempt: 0, to: &process.lifecycle)
            }
        case .completed, .failed:
            planned.end(decision.outcome, at: now, to: &process.lifecycle)
        }
        return try planned.writes(in: context)
    }
}

/// The events one decision appends to a process stream, with the stream version each will get (timeout ids
/// are derived from it).
struct ProcessEventPlan<Domain: DomainEvent> {
    let processID: StreamID
    private(set) var version: Int
    private(set) var events: [ProcessEvent<Domain>] = []

    init(processID: StreamID, version: Int) {
        self.processID = processID
        self.version = version
    }

    mutating func append(_ event: ProcessEvent<Domain>, to lifecycle: inout ProcessLifecycle) {
        events.append(event)
        version += 1
        if case .lifecycle(let lifecycleEvent) = event { lifecycle.apply(lifecycleEvent) }
    }

    mutating func scheduleTimeout(dueAt: Date, attempt: Int, to lifecycle: inout ProcessLifecycle) {
        let id = TimeoutID.make(processID: processID, version: version + 1)
        append(.lifecycle(.timeoutScheduled(TimeoutScheduled(timeoutID: id, dueAt: dueAt, attempt: attempt))), to: &lifecycle)
    }

    /// Cancels the pending timeout and records completion or failure.
    mutating func end(_ outcome: ProcessDecision<Domain>.Outcome, at now: Date, to lifecycle: inout ProcessLifecycle) {
        guard let started = lifecycle.started else { return }
        let ending: ProcessLifecycleEvent
        let reason: String
        switch outcome {
        case .running:
            return
        case .completed:
            reason = "the process completed"
            ending = .completed(ProcessCompleted(processType: started.processType, startedAt: started.startedAt, completedAt: now))
        case .failed(let why):
            reason = "the process failed"
            ending = .failed(ProcessFailed(processType: started.processType, reason: why, startedAt: started.startedAt, failedAt: now))
        }
        if let pending = lifecycle.pendingTimeout {
            append(.lifecycle(.timeoutCancelled(TimeoutCancelled(timeoutID: pending.timeoutID, reason: reason))), to: &lifecycle)
        }
        append(.lifecycle(ending), to: &lifecycle)
    }

    func writes(in context: CommandContext) throws(EventStoreError) -> [StreamWrite<ProcessEvent<Domain>>] {
        var writes: [StreamWrite<ProcessEvent<Domain>>] = []
        for event in events { writes.append(try context.write(event, to: processID)) }
        return writes
    }
}
