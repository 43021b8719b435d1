import Foundation
import Synchronization

/// Child processes awaited without blocking a thread of the cooperative pool, and never forever.
///
/// On a 2-core machine the pool has two threads; a test blocked in `waitUntilExit()` takes one of them away
/// from every other test, and a child that never ends would hang the whole run. Here the exit arrives through
/// the termination handler, and a child still running at its deadline is killed and reported.
public enum ChildProcess {
    /// What a finished child left behind.
    public struct Outcome: Sendable {
        /// The exit status, or the signal that ended it.
        public var status: Int32
        /// Whether it exited (rather than being ended by a signal).
        public var exited: Bool
        /// Its standard output, then its standard error.
        public var output: String { standardOutput + standardError }
        /// Its standard output alone (what a `--json` command prints).
        public var standardOutput: String
        /// Its standard error alone (logs and error messages).
        public var standardError: String
        /// Whether it was killed for running past its deadline.
        public var timedOut: Bool
    }

    /// Runs `executable` with `arguments` and collects its output.
    public static func run(
        _ executable: URL, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(300)
    ) async throws -> Outcome {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        let outputPipe = Pipe(), errorPipe = Pipe()
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        // The output is drained as it comes, so a chatty child never blocks on a full pipe.
        let collectedOutput = Mutex(Data()), collectedError = Mutex(Data())
        outputPipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if !chunk.isEmpty { collectedOutput.withLock { $0.append(chunk) } }
        }
        errorPipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if !chunk.isEmpty { collectedError.withLock { $0.append(chunk) } }
        }
        let exited = exitSignal(of: process)
        try process.run()
        let timedOut = await wait(for: process, exited: exited, timeout: timeout)
        outputPipe.fileHandleForReading.readabilityHandler = nil
        errorPipe.fileHandleForReading.readabilityHandler = nil
        let output = collectedOutput.withLock { $0 } + outputPipe.fileHandleForReading.readDataToEndOfFile()
        let error = collectedError.withLock { $0 } + errorPipe.fileHandleForReading.readDataToEndOfFile()
        return Outcome(
            status: process.terminationStatus, exited: process.terminationReason == .exit,
            standardOutput: String(decoding: output, as: UTF8.self), standardError: String(decoding: error, as: UTF8.self),
            timedOut: timedOut
        )
    }

    /// Waits until an already started `process` ends; kills it with SIGKILL if it is still running at
    /// `timeout`. Returns whether it had to be killed.
    @discardableResult
    public static func waitForExit(_ process: Process, timeout: Duration = .seconds(120)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                kill(process.processIdentifier, SIGKILL)
                while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
                return true
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    private static func exitSignal(of process: Process) -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        process.terminationHandler = { _ in
            continuation.yield()
            continuation.finish()
        }
        return stream
    }

    private static func wait(for process: Process, exited: AsyncStream<Void>, timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool?.self) { group in
            group.addTask {
                for await _ in exited {}
                return false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                if Task.isCancelled { return nil }
                kill(process.processIdentifier, SIGKILL)
                return true
            }
            var timedOut = false
            for await result in group {
                guard let result else { continue }
                if result { timedOut = true } else { group.cancelAll() }
            }
            // The termination handler runs before `terminationStatus` is readable on some platforms.
            while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
            return timedOut
        }
    }
}
