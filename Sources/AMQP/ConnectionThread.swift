import Foundation
import Synchronization

/// Work handed to a connection's thread. It runs there, alone, with the connection's state.
typealias ConnectionJob = @Sendable (ConnectionCore) -> Void

/// The OS thread a librabbitmq connection is confined to, and the queue through which async callers hand it
/// work. librabbitmq blocks and must not be shared between threads, so nothing of it runs on Swift's
/// cooperative pool: callers enqueue jobs and await continuations the thread resumes.
///
/// The thread sleeps in `poll(2)` on the broker's socket and on a wake-up pipe; submitting a job writes one
/// byte to the pipe only when the thread is asleep, so a busy connection costs no extra system calls.
final class ConnectionThread: Sendable {
    private struct Queue: ~Copyable {
        var jobs: [ConnectionJob] = []
        var sleeping = false
        var wakePending = false
        var accepting = true
    }

    private let queue = Mutex(Queue())
    /// Read end of the wake-up pipe; the thread polls it.
    let wakeReadFD: Int32
    private let wakeWriteFD: Int32

    init() throws(AMQPError) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw AMQPError(.libraryError, operation: "create wake-up pipe", detail: String(cString: strerror(errno)))
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeReadFD = fds[0]
        wakeWriteFD = fds[1]
    }

    deinit {
        close(wakeReadFD)
        close(wakeWriteFD)
    }

    /// Starts the thread running `body`.
    func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        // librabbitmq decodes nested header tables recursively: a frame of 128 KiB can nest some 26,000 levels,
        // which needs a few MiB of stack. Reserved, not committed, so it costs nothing until used.
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Enqueues a job. Returns false when the thread has stopped accepting work (the connection is closed).
    @discardableResult
    func submit(_ job: @escaping ConnectionJob) -> Bool {
        let wake: Bool? = queue.withLock { queue in
            guard queue.accepting else { return nil }
            queue.jobs.append(job)
            if queue.sleeping && !queue.wakePending {
                queue.wakePending = true
                return true
            }
            return false
        }
        guard let wake else { return false }
        if wake {
            var byte: UInt8 = 1
            _ = write(wakeWriteFD, &byte, 1)
        }
        return true
    }

    /// Takes every job queued so far.
    func takeJobs() -> [ConnectionJob] {
        queue.withLock { queue in
            guard !queue.jobs.isEmpty else { return [] }
            let jobs = queue.jobs
            queue.jobs.removeAll(keepingCapacity: true)
            return jobs
        }
    }

    /// Marks the thread as about to sleep; false when work is already waiting, so it must not.
    func prepareToSleep() -> Bool {
        queue.withLock { queue in
            guard queue.jobs.isEmpty else { return false }
            queue.sleeping = true
            return true
        }
    }

    /// Marks the thread awake again and empties the wake-up pipe.
    func didWake() {
        let drain = queue.withLock { queue in
            queue.sleeping = false
            defer { queue.wakePending = false }
            return queue.wakePending
        }
        if drain {
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(wakeReadFD, &buffer, buffer.count) > 0 {}
        }
    }

    /// Stops accepting jobs and returns those still queued, which the caller must fail.
    func stopAccepting() -> [ConnectionJob] {
        queue.withLock { queue in
            queue.accepting = false
            let jobs = queue.jobs
            queue.jobs = []
            return jobs
        }
    }
}
