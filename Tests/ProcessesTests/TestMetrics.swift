import CoreMetrics
import Foundation
import Synchronization

/// A metrics factory that keeps every value reported, by label and dimensions, for tests to read.
final class CapturingMetricsFactory: MetricsFactory, Sendable {
    struct Key: Hashable, CustomStringConvertible {
        var label: String
        var dimensions: [String]

        init(_ label: String, _ dimensions: [(String, String)]) {
            self.label = label
            self.dimensions = dimensions.map { "\($0.0)=\($0.1)" }.sorted()
        }

        var description: String { "\(label){\(dimensions.joined(separator: ","))}" }
    }

    private struct Values {
        var counters: [Key: Int64] = [:]
        var gauges: [Key: Double] = [:]
        var timers: [Key: [Int64]] = [:]
    }

    private let values = Mutex(Values())

    func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        values.withLock { $0.counters[Key(label, dimensions)] ?? 0 }
    }

    func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Double {
        values.withLock { $0.gauges[Key(label, dimensions)] ?? 0 }
    }

    func timer(_ label: String, _ dimensions: [(String, String)] = []) -> [Int64] {
        values.withLock { $0.timers[Key(label, dimensions)] ?? [] }
    }

    var labels: Set<String> {
        values.withLock { Set($0.counters.keys.map(\.label) + $0.gauges.keys.map(\.label) + $0.timers.keys.map(\.label)) }
    }

    private final class Handler: CounterHandler, FloatingPointCounterHandler, MeterHandler, RecorderHandler, TimerHandler, Sendable {
        let key: Key
        let factory: CapturingMetricsFactory

        init(key: Key, factory: CapturingMetricsFactory) {
            self.key = key
            self.factory = factory
        }

        func increment(by amount: Int64) { factory.values.withLock { $0.counters[key, default: 0] += amount } }
        func increment(by amount: Double) { factory.values.withLock { $0.gauges[key, default: 0] += amount } }
        func decrement(by amount: Double) { factory.values.withLock { $0.gauges[key, default: 0] -= amount } }
        func set(_ value: Int64) { factory.values.withLock { $0.gauges[key] = Double(value) } }
        func set(_ value: Double) { factory.values.withLock { $0.gauges[key] = value } }
        func record(_ value: Int64) { factory.values.withLock { $0.gauges[key] = Double(value) } }
        func record(_ value: Double) { factory.values.withLock { $0.gauges[key] = value } }
        func recordNanoseconds(_ duration: Int64) { factory.values.withLock { $0.timers[key, default: []].append(duration) } }
        func reset() { factory.values.withLock { $0.counters[key] = 0 } }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler { Handler(key: Key(label, dimensions), factory: self) }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler { Handler(key: Key(label, dimensions), factory: self) }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { Handler(key: Key(label, dimensions), factory: self) }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler { Handler(key: Key(label, dimensions), factory: self) }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { Handler(key: Key(label, dimensions), factory: self) }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}
