import EventCore

/// A small bank used by the contract suite, the concurrency tests and the benchmark: accounts are streams,
/// money moves between them with two-stream commands.
public enum SampleBank {
    /// The events of an account stream.
    public enum Event: DomainEvent, Equatable {
        /// The account was opened for `owner`.
        case opened(owner: String)
        /// Money came in.
        case deposited(amount: Int)
        /// Money went out.
        case withdrawn(amount: Int)
        /// A remark that changes no balance.
        case noted(text: String)

        /// `AccountOpened`, `MoneyDeposited`, `MoneyWithdrawn` or `AccountNoted`.
        public var eventType: String {
            switch self {
            case .opened: "AccountOpened"
            case .deposited: "MoneyDeposited"
            case .withdrawn: "MoneyWithdrawn"
            case .noted: "AccountNoted"
            }
        }

        /// The bank's four type names; events of other types in its streams are skipped by folds.
        public static func handles(eventType: String) -> Bool {
            ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountNoted"].contains(eventType)
        }
    }

    /// Balances of the accounts a command read, and which of them are open.
    public struct Ledger: Sendable, Equatable {
        /// Balance per account stream.
        public var balances: [StreamID: Int] = [:]
        /// Accounts with an `opened` event.
        public var open: Set<StreamID> = []
        /// Number of `noted` events folded.
        public var notes = 0

        /// An empty ledger.
        public init() {}

        /// Folds one stored bank event.
        public mutating func apply(_ event: Event, in stream: StreamID) {
            switch event {
            case .opened: open.insert(stream)
            case .deposited(let amount): balances[stream, default: 0] += amount
            case .withdrawn(let amount): balances[stream, default: 0] -= amount
            case .noted: notes += 1
            }
        }

        /// The balance of `account` (0 if unknown).
        public func balance(of account: StreamID) -> Int { balances[account] ?? 0 }
    }

    /// Why a bank command refused.
    public struct Refusal: Error, Equatable, CustomStringConvertible {
        /// The reason.
        public var reason: String
        /// Creates a refusal.
        public init(_ reason: String) { self.reason = reason }
        /// The reason.
        public var description: String { reason }
    }

    /// Opens an account with an initial deposit; refuses if it is already open.
    public struct OpenAccount: Command {
        /// The account stream.
        public var account: StreamID
        /// The owner's name.
        public var owner: String
        /// The first deposit (none if 0).
        public var initialDeposit: Int

        /// Creates the command.
        public init(account: StreamID, owner: String, initialDeposit: Int) {
            self.account = account
            self.owner = owner
            self.initialDeposit = initialDeposit
        }

        /// The account only.
        public var readStreams: [StreamID] { [account] }
        /// An empty ledger.
        public var initialState: Ledger { Ledger() }
        /// Folds into the ledger.
        public func apply(_ state: inout Ledger, _ event: Event) {}
        /// Folds into the ledger, by stream.
        public func apply(_ state: inout Ledger, _ event: Event, recorded: StoredEvent) {
            state.apply(event, in: recorded.streamID)
        }
        /// `opened` then `deposited`, or a refusal if the account is open.
        public func handle(_ state: Ledger, context: CommandContext) throws -> [StreamWrite<Event>] {
            guard !state.open.contains(account) else { throw Refusal("account \(account) is already open") }
            var writes = [try context.write(Event.opened(owner: owner), to: account)]
            if initialDeposit > 0 { writes.append(try context.write(Event.deposited(amount: initialDeposit), to: account)) }
            return writes
        }
    }

    /// Moves `amount` from one account to another; decides nothing when the source lacks the money.
    ///
    /// With `discoverDestination` the destination is not declared but asked for through the `StreamResolver`.
    /// With `auditStream` the command also reads that stream (and only reads it): its version takes part in the
    /// conflict check, and the transfer is refused when the audit stream holds a `noted("freeze")` event.
    public struct Transfer: Command {
        /// The source account.
        public var from: StreamID
        /// The destination account.
        public var to: StreamID
        /// How much to move.
        public var amount: Int
        /// Whether the destination is discovered at run time instead of declared.
        public var discoverDestination: Bool
        /// A stream read only, whose change must make the transfer retry.
        public var auditStream: StreamID?

        /// Creates the command.
        public init(from: StreamID, to: StreamID, amount: Int, discoverDestination: Bool = false, auditStream: StreamID? = nil) {
            self.from = from
            self.to = to
            self.amount = amount
            self.discoverDestination = discoverDestination
            self.auditStream = auditStream
        }

        /// The state: balances plus whether the audit stream froze transfers.
        public struct State: Sendable, Equatable {
            /// Balances of the accounts read.
            public var ledger = Ledger()
            /// Whether a `noted("freeze")` event was folded from the audit stream.
            public var frozen = false
        }

        /// Source, destination (unless discovered) and the audit stream.
        public var readStreams: [StreamID] {
            var streams = [from]
            if !discoverDestination { streams.append(to) }
            if let auditStream { streams.append(auditStream) }
            return streams
        }
        /// Nothing known yet.
        public var initialState: State { State() }
        /// Unused: the fold needs the stream of each event.
        public func apply(_ state: inout State, _ event: Event) {}
        /// Folds balances and the freeze flag.
        public func apply(_ state: inout State, _ event: Event, recorded: StoredEvent) {
            if recorded.streamID == auditStream, case .noted(let text) = event, text == "freeze" { state.frozen = true }
            state.ledger.apply(event, in: recorded.streamID)
        }
        /// Withdraws from `from` and deposits to `to`, or decides nothing if the money is not there.
        public func handle(_ state: State, context: CommandContext) throws -> [StreamWrite<Event>] {
            if discoverDestination && !context.streams.contains(to) {
                context.resolver.add(to)
            }
            if state.frozen { throw Refusal("transfers are frozen") }
            guard amount > 0, from != to, state.ledger.balance(of: from) >= amount else { return [] }
            return [
                try context.write(Event.withdrawn(amount: amount), to: from),
                try context.write(Event.deposited(amount: amount), to: to),
            ]
        }
    }

    /// Folds `events` (of any streams) into a ledger, skipping events that are not bank events.
    public static func ledger(of events: [StoredEvent]) throws -> Ledger {
        var ledger = Ledger()
        let codec = EventCodec()
        for stored in events {
            if let event = try codec.decode(stored, as: Event.self) { ledger.apply(event, in: stored.streamID) }
        }
        return ledger
    }

    /// The stream id `account-<number>`.
    public static func account(_ number: Int) -> StreamID {
        // The format always makes a valid id.
        try! StreamID("account-\(number)")
    }
}
