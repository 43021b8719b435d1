import PostgresNIO

extension PostgresClient {
    /// Starts the pool's `run()` in a task of its own and returns that task once the pool is under way.
    ///
    /// A connection leased before `run()` has begun waits in the pool's queue, and postgres-nio logs a warning
    /// for each such lease; a test process whose suites all start at once made dozens of them. Every user of a
    /// client in this project starts it this way and leases afterwards. Cancel the returned task to stop the
    /// pool.
    public func startRunning() async -> Task<Void, Never> {
        let (started, starting) = AsyncStream.makeStream(of: Void.self)
        let running = Task.detached {
            starting.finish()
            await self.run()
        }
        for await _ in started {}
        // `run()` marks the client running at once and then starts the pool's event loop; a moment's margin lets
        // the loop begin before the first lease.
        try? await Task.sleep(for: .milliseconds(20))
        return running
    }
}
