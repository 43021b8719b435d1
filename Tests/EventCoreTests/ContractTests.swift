import EventCore
import EventCoreTestKit
import EventStorePostgres
import EventStoreSQLite
import Testing

/// The one contract suite, on each of the three stores.
@Suite("Event store contract")
struct ContractTests {
    @Test("in-memory store", arguments: EventStoreContract.cases)
    func memory(_ contractCase: EventStoreContract.Case) async throws {
        try await contractCase.run(against: InMemoryEventStore())
    }

    @Test("SQLite store", arguments: EventStoreContract.cases)
    func sqlite(_ contractCase: EventStoreContract.Case) async throws {
        try await TestFiles.withSQLiteStore { store, _ in
            try await contractCase.run(against: store)
        }
    }

    @Test("PostgreSQL store", arguments: EventStoreContract.cases)
    func postgres(_ contractCase: EventStoreContract.Case) async throws {
        try await PostgresEventStore.withTestStore { store in
            try await contractCase.run(against: store)
        }
    }

    @Test("the suite has at least thirty cases with distinct names")
    func suiteSize() {
        #expect(EventStoreContract.cases.count >= 30)
        #expect(Set(EventStoreContract.cases.map(\.name)).count == EventStoreContract.cases.count)
    }
}
