import AMQP
import Foundation
import Synchronization

/// How a message that is not due yet (a timeout, a retry) waits for its due time so that it is handled
/// neither early nor late: mostly on the broker's delay levels, and for its last seconds in the worker.
///
/// The delay levels count whole seconds, and every level a message waits in costs it a hop: the waiting
/// queue's at-least-once dead-lettering, about 0.1 to 0.3 s on a busy node. A delay rounded up to whole
/// seconds would make a timeout up to a second late before its hops, each of which adds more. So the worker
/// routes a delay to end a little before the due time (``lead`` plus what each level the delay passes costs,
/// rounded down to whole seconds, and among the delays that still end within ``holdWindow`` of the due time
/// the one through the fewest levels), and holds a message that arrives within ``holdWindow`` of its due
/// time: unacknowledged, outside the handlers' concurrency, until it is due. A message due within
/// ``holdWindow`` when it is scheduled goes straight to its destination and is held there. The broker keeps
/// the message until the worker acknowledges it, so a worker that dies while holding it loses nothing: the
/// message is redelivered and held by another.
public struct DelayTiming: Sendable, Equatable {
    /// The longest a worker holds a message that arrived before its due time; one that arrives earlier goes
    /// back to the delay levels.
    public var holdWindow: TimeInterval
    /// How much earlier than its due time a routed delay is meant to end.
    public var lead: TimeInterval
    /// How much earlier again for each level the delay passes (the expected cost of a hop).
    public var leadPerHop: TimeInterval

    /// A timing; the defaults suit a single node and a three-node cluster alike.
    public init(holdWindow: TimeInterval = 10, lead: TimeInterval = 0.5, leadPerHop: TimeInterval = 0.25) {
        self.holdWindow = holdWindow
        self.lead = lead
        self.leadPerHop = leadPerHop
    }

    /// The whole seconds a message due in `remaining` seconds waits on the delay levels, so that it arrives
    /// before its due time (and is held for the rest); 0 sends it straight to its destination to be held
    /// there. Never more than `maximum`, the levels' longest delay.
    ///
    /// With `atLeastOneSecond` (for a message that arrived too early to be held, or found the hold full) a
    /// delay that would be 0 is the remaining time rounded up instead, so the message cannot come straight back:
    /// it arrives late by up to a second and its hop rather than loop.
    ///
    /// `hopCost` is what a hop costs lately (``HopCost``), at least ``leadPerHop``; the whole lead stays a second
    /// inside the hold window, so that a message that arrives as early as planned can be held.
    public func routedSeconds(remaining: TimeInterval, maximum: Int, atLeastOneSecond: Bool = false, hopCost: TimeInterval = 0) -> Int {
        guard remaining > holdWindow else {
            return atLeastOneSecond ? min(max(1, Int(remaining.rounded(.up))), maximum) : 0
        }
        var seconds = Int(min(remaining.rounded(.down), Double(maximum)))
        while seconds > 0 && Double(seconds) + self.lead(hops: seconds.nonzeroBitCount, hopCost: hopCost) > remaining {
            seconds -= 1
        }
        // Among the delays that still arrive within the hold window (half a second to spare), the one with the
        // fewest levels: every hop is work for the broker and a chance to be late. With a 10 s window this saves
        // about a third of the hops of delays up to ten minutes.
        var fewest = seconds
        let shortest = max(1, Int((remaining - holdWindow + 0.5).rounded(.up)))
        if shortest < seconds {
            for candidate in stride(from: seconds - 1, through: shortest, by: -1) where candidate.nonzeroBitCount < fewest.nonzeroBitCount {
                fewest = candidate
            }
        }
        return max(atLeastOneSecond ? 1 : 0, fewest)
    }

    /// How much earlier than the due time a delay over `hops` levels is meant to end.
    public func lead(hops: Int, hopCost: TimeInterval = 0) -> TimeInterval {
        min(lead + max(leadPerHop, hopCost) * Double(hops), max(lead, holdWindow - 1))
    }

    /// What a worker does with a message that arrives `remaining` seconds before its due time.
    public enum Arrival: Sendable, Equatable {
        /// It is due (or late): handle it now.
        case due
        /// Hold it this many seconds, then handle it.
        case hold(TimeInterval)
        /// Too early to hold: send it back to the delay levels.
        case tooEarly
    }

    /// What a worker does with a message that arrives `remaining` seconds before its due time.
    public func arrival(remaining: TimeInterval) -> Arrival {
        if remaining <= 0 { return .due }
        return remaining <= holdWindow ? .hold(remaining) : .tooEarly
    }

    /// How long to sleep while holding a message `seconds` before its due time: a millisecond more, because the
    /// due time is kept in whole milliseconds, rounded up.
    public static func holdDuration(_ seconds: TimeInterval) -> Duration {
        .milliseconds(Int64((seconds * 1000).rounded(.up)) + 1)
    }
}

/// What a hop through the delay levels costs lately, learnt from the messages that come out of them.
///
/// A delayed message carries the time it was sent to the levels (`x-fleet-delayed-at`) and its delay in its
/// routing key; what it took beyond that delay, shared among the levels it passed, is one sample. The estimate
/// rises fast and falls slowly, so it follows the dearer hops of a busy broker rather than the mean. Samples
/// are clamped, so a forged header can at worst make messages arrive earlier, to be held or sent back, never
/// handled early.
public final class HopCost: Sendable {
    private let estimate: Mutex<Double>

    /// An estimate starting at `initial` seconds per hop.
    public init(initial: TimeInterval = 0.25) {
        estimate = Mutex(initial)
    }

    /// The current estimate, in seconds per hop.
    public var seconds: TimeInterval { estimate.withLock { $0 } }

    /// Learns from a message that waited `delaySeconds` on `levels`, sent at `delayedAt` and out now.
    public func observe(delayedAt: Date, delaySeconds: Int, hops: Int, now: Date) {
        guard hops > 0 else { return }
        let sample = min(5, max(0, (now.timeIntervalSince(delayedAt) - Double(delaySeconds)) / Double(hops)))
        estimate.withLock { estimate in
            estimate += (sample > estimate ? 0.2 : 0.02) * (sample - estimate)
        }
    }

    /// Learns from a delivery that came out of `levels`: its routing key spells the delay, its
    /// `x-fleet-delayed-at` header (``stamp(_:sentAt:)``) says when it was sent. Deliveries without them teach
    /// nothing.
    public func observe(routingKey: String, headers: AMQPTable?, levels: DelayLevels, now: Date) {
        guard let sent = headers?[Envelope.Header.delayedAt]?.intValue,
              let seconds = levels.delaySeconds(routingKey: routingKey) else { return }
        observe(delayedAt: Date(timeIntervalSince1970: Double(sent) / 1000), delaySeconds: seconds,
                hops: levels.hops(delaySeconds: seconds), now: now)
    }

    /// Stamps a message sent to the delay levels at `now` with `x-fleet-delayed-at`, in whole milliseconds.
    public static func stamp(_ headers: inout AMQPTable?, sentAt now: Date) {
        headers = (headers ?? [:]).merging([Envelope.Header.delayedAt: .int64(Int64((now.timeIntervalSince1970 * 1000).rounded(.down)))]) { $1 }
    }
}
