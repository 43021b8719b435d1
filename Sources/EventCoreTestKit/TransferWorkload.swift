import EventCore
import Synchronization

/// Money moving between bank accounts from many concurrent executors: the load of the concurrency tests, the
/// two-process tests and the benchmark. Every transfer is a two-stream command.
public struct TransferWorkload: Sendable {
    /// What a run did.
    public struct Statistics: Sendable, Hashable, Codable {
        /// Transfers that committed.
        public var committed = 0
        /// Transfers that decided nothing (not enough money).
        public var noOps = 0
        /// Version conflicts that the executor retried.
        public var conflictsRetried = 0
        /// Transfers that failed (the error kinds are in ``failures``).
        public var failed = 0
        /// Descriptions of the first failures.
        public var failures: [String] = []

        /// No transfers yet.
        public init() {}

        /// Adds `other` to these statistics.
        public mutating func add(_ other: Statistics) {
            committed += other.committed
            noOps += other.noOps
            conflictsRetried += other.conflictsRetried
            failed += other.failed
            failures += other.failures.prefix(max(0, 5 - failures.count))
        }
    }

    /// How many accounts money moves between.
    public var accounts: Int
    /// The balance each account opens with.
    public var openingBalance: Int
    /// The largest amount of one transfer.
    public var maximumAmount: Int

    /// Creates a workload.
    public init(accounts: Int, openingBalance: Int = 1_000, maximumAmount: Int = 50) {
        self.accounts = accounts
        self.openingBalance = openingBalance
        self.maximumAmount = maximumAmount
    }

    /// The account streams.
    public var accountStreams: [StreamID] { (0..<accounts).map { SampleBank.account($0) } }

    /// The money that must always be in the bank.
    public var total: Int { accounts * openingBalance }

    /// Deposits the opening balance into every account, in batches of one append.
    public func openAccounts(in store: any EventStore) async throws {
        let codec = EventCodec()
        let streams = accountStreams
        var start = 0
        while start < streams.count {
            var events: [NewEvent] = []
            for stream in streams[start..<min(streams.count, start + 500)] {
                for event in [SampleBank.Event.opened(owner: stream.rawValue), .deposited(amount: openingBalance)] {
                    let encoded = try codec.encode(event)
                    events.append(NewEvent(streamID: stream, eventType: encoded.eventType, payload: encoded.payload))
                }
            }
            _ = try await store.append(AppendRequest(events: events))
            start += 500
        }
    }

    /// Runs `commands` transfers spread over `tasks` concurrent tasks, each with its own seeded random source.
    public func run(executor: CommandExecutor, commands: Int, tasks: Int, seed: UInt64) async -> Statistics {
        await withTaskGroup(of: Statistics.self) { group in
            for task in 0..<tasks {
                let share = commands / tasks + (task < commands % tasks ? 1 : 0)
                group.addTask {
                    var random = SplitMix64(seed: seed &* 1_000_003 &+ UInt64(task))
                    var statistics = Statistics()
                    for _ in 0..<share {
                        await transfer(executor: executor, random: &random, into: &statistics)
                    }
                    return statistics
                }
            }
            var total = Statistics()
            for await statistics in group { total.add(statistics) }
            return total
        }
    }

    /// Runs transfers on `tasks` concurrent tasks until `stop()` returns true; for benchmarks.
    public func run(executor: CommandExecutor, tasks: Int, seed: UInt64, until stop: @escaping @Sendable () -> Bool) async -> Statistics {
        await withTaskGroup(of: Statistics.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var random = SplitMix64(seed: seed &* 1_000_003 &+ UInt64(task))
                    var statistics = Statistics()
                    while !stop() {
                        await transfer(executor: executor, random: &random, into: &statistics)
                    }
                    return statistics
                }
            }
            var total = Statistics()
            for await statistics in group { total.add(statistics) }
            return total
        }
    }

    private func transfer(executor: CommandExecutor, random: inout SplitMix64, into statistics: inout Statistics) async {
        let from = Int(random.next() % UInt64(accounts))
        var to = Int(random.next() % UInt64(accounts - 1))
        if to >= from { to += 1 }
        let amount = 1 + Int(random.next() % UInt64(maximumAmount))
        do {
            let result = try await executor.execute(SampleBank.Transfer(from: SampleBank.account(from), to: SampleBank.account(to), amount: amount))
            statistics.conflictsRetried += result.conflictsRetried
            switch result.outcome {
            case .committed: statistics.committed += 1
            case .noOp: statistics.noOps += 1
            case .duplicate: statistics.failures.append("unexpected duplicate")
            }
        } catch {
            statistics.failed += 1
            if statistics.failures.count < 5 { statistics.failures.append(String(describing: error)) }
        }
    }

    /// What the store holds after a run, checked against the bank's invariants.
    public struct Audit: Sendable, Hashable {
        /// The sum of all balances.
        public var total: Int
        /// Withdrawal events in all accounts.
        public var withdrawals: Int
        /// Deposit events beyond the opening deposits.
        public var transferDeposits: Int
        /// Accounts whose balance went below zero (a lost update would cause this).
        public var overdrawnAccounts: Int
        /// Accounts whose stream versions are not exactly 1...n.
        public var accountsWithVersionGaps: Int
    }

    /// Reads every account and sums it up.
    public func audit(_ store: any EventStore) async throws -> Audit {
        let snapshot = try await store.read(accountStreams)
        let codec = EventCodec()
        var balances: [StreamID: Int] = [:]
        var lowest: [StreamID: Int] = [:]
        var withdrawals = 0, deposits = 0, gaps = 0
        var versions: [StreamID: Int] = [:]
        for stored in snapshot.events {
            let expected = versions[stored.streamID, default: 0] + 1
            if stored.streamVersion != expected { gaps += 1 }
            versions[stored.streamID] = stored.streamVersion
            guard let event = try codec.decode(stored, as: SampleBank.Event.self) else { continue }
            switch event {
            case .deposited(let amount):
                balances[stored.streamID, default: 0] += amount
                deposits += 1
            case .withdrawn(let amount):
                balances[stored.streamID, default: 0] -= amount
                withdrawals += 1
            case .opened, .noted:
                break
            }
            lowest[stored.streamID] = min(lowest[stored.streamID] ?? 0, balances[stored.streamID] ?? 0)
        }
        return Audit(
            total: balances.values.reduce(0, +),
            withdrawals: withdrawals,
            transferDeposits: deposits - accounts,
            overdrawnAccounts: lowest.values.filter { $0 < 0 }.count,
            accountsWithVersionGaps: gaps
        )
    }
}
