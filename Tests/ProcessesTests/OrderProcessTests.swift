import EventCore
import Foundation
import OrderFulfillment
import Processes
import Testing

typealias OrderEvent = ProcessEvent<OrderProcessEvent>

/// Builders for the events the order process writes, so expectations read like the history they describe.
struct OrderHistory {
    let orderID: String
    let start: Date
    var process = OrderFulfillmentProcess()

    var processID: StreamID { try! OrderFulfillmentProcess.processID(orderID: orderID) }

    func timeoutID(_ version: Int) -> String { TimeoutID.make(processID: processID, version: version) }

    func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    func started() -> OrderEvent {
        .lifecycle(.started(ProcessStarted(
            processType: OrderFulfillmentProcess.processType, businessID: orderID, startedAt: start,
            deadline: process.timeoutPolicy.overallTimeout.map { start.addingTimeInterval(Double($0.components.seconds)) },
            retryPolicy: process.timeoutPolicy.retryPolicy
        )))
    }

    func scheduled(_ version: Int, dueAt: Date, attempt: Int = 0) -> OrderEvent {
        .lifecycle(.timeoutScheduled(TimeoutScheduled(timeoutID: timeoutID(version), dueAt: dueAt, attempt: attempt)))
    }

    func cancelled(_ version: Int, _ reason: String = "superseded: the process made progress") -> OrderEvent {
        .lifecycle(.timeoutCancelled(TimeoutCancelled(timeoutID: timeoutID(version), reason: reason)))
    }

    func completed(at date: Date) -> OrderEvent {
        .lifecycle(.completed(ProcessCompleted(processType: OrderFulfillmentProcess.processType, startedAt: start, completedAt: date)))
    }

    func failed(_ reason: String, at date: Date) -> OrderEvent {
        .lifecycle(.failed(ProcessFailed(processType: OrderFulfillmentProcess.processType, reason: reason, startedAt: start, failedAt: date)))
    }

    func retry(firing version: Int, attempt: Int, retryAt: Date) -> OrderEvent {
        .lifecycle(.retryScheduled(RetryScheduled(firedTimeoutID: timeoutID(version), attempt: attempt, retryAt: retryAt)))
    }
}

let day: Double = 86_400
let hour: Double = 3_600

@Suite("Order fulfillment process")
struct OrderProcessTests {
    let clock = ManualClock()
    var history: OrderHistory { OrderHistory(orderID: "o-1", start: clock.now) }
    var scenario: ProcessScenario<OrderFulfillmentProcess> { ProcessScenario(OrderFulfillmentProcess(), businessID: "o-1", clock: clock) }

    @Test("the process id is derived from the order id and validated")
    func processID() throws {
        #expect(try OrderFulfillmentProcess.processID(orderID: "42").rawValue == "order-fulfillment-42")
        #expect(throws: EventStoreError.self) { try OrderFulfillmentProcess.processID(orderID: "") }
        #expect(throws: EventStoreError.self) { try OrderFulfillmentProcess.processID(orderID: "bad\nid") }
        #expect(throws: EventStoreError.self) { try OrderFulfillmentProcess.processID(orderID: String(repeating: "x", count: 250)) }
    }

    @Test("a placed order starts the process with its deadline and first step timeout")
    func start() async throws {
        let h = history
        try await scenario.when(.orderPlaced)
            .then(written: [h.started(), h.scheduled(2, dueAt: h.at(day))])
            .then(status: .running)
    }

    @Test("a confirmed payment completes the first step and replaces the step timeout")
    func payment() async throws {
        let h = history
        let outcome = try await scenario.given(triggers: .orderPlaced)
            .when(.paymentConfirmed(paymentID: "p-1"), after: .seconds(600))
        try outcome.then(written: [
            .domain(.paymentRecorded(paymentID: "p-1")),
            .domain(.stepCompleted(.paymentConfirmed)),
            h.cancelled(2),
            h.scheduled(6, dueAt: h.at(600 + day)),
        ])
        #expect(outcome.process.currentStep == .paymentConfirmed)
        #expect(outcome.execution?.timeoutsToSchedule.map(\.timeoutID) == [h.timeoutID(6)])
        #expect(outcome.execution?.timeoutsCancelled.map(\.timeoutID) == [h.timeoutID(2)])
    }

    @Test("the happy path runs every step and completes")
    func happyPath() async throws {
        let h = history
        let outcome = try await scenario
            .given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"), .inventoryReserved(reservationID: "r-1"), .shipped(trackingNumber: "T-1"))
            .when(.delivered, after: .seconds(2 * day))
        try outcome.then(written: [
            .domain(.deliveryRecorded),
            .domain(.stepCompleted(.delivered)),
            h.cancelled(14, "the process completed"),
            h.completed(at: h.at(2 * day)),
        ])
        .then(status: .completed)
        #expect(outcome.process.currentStep == .completed)
        #expect(outcome.process.state.paymentID == "p-1")
        #expect(outcome.process.state.reservationID == "r-1")
        #expect(outcome.process.state.trackingNumber == "T-1")
        #expect(outcome.process.orderID == "o-1")
        #expect(outcome.process.timeoutAt == h.at(7 * day))
        #expect(outcome.execution?.timeoutsToSchedule.isEmpty == true)
    }

    @Test("a process may start from any trigger, not only the order being placed")
    func implicitStart() async throws {
        let h = history
        try await scenario.when(.paymentConfirmed(paymentID: "p-1"))
            .then(written: [
                h.started(), h.scheduled(2, dueAt: h.at(day)),
                .domain(.paymentRecorded(paymentID: "p-1")), .domain(.stepCompleted(.paymentConfirmed)),
                h.cancelled(2), h.scheduled(6, dueAt: h.at(day)),
            ])
    }

    @Test("a duplicate event writes nothing", arguments: [
        ProcessTrigger.paymentConfirmed(paymentID: "p-1"), .paymentConfirmed(paymentID: "p-other"), .inventoryReserved(reservationID: "r-1"),
        .shipped(trackingNumber: "T-1"), .orderPlaced,
    ])
    func duplicate(_ trigger: ProcessTrigger) async throws {
        try await scenario
            .given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"), .inventoryReserved(reservationID: "r-1"), .shipped(trackingNumber: "T-1"))
            .when(trigger)
            .thenNothingWritten()
            .then(status: .running)
    }

    @Test("an event that overtakes an earlier step is recorded and the process catches up when the gap closes")
    func outOfOrder() async throws {
        let h = history
        let early = try await scenario.given(triggers: .orderPlaced).when(.inventoryReserved(reservationID: "r-1"))
        // The fact is kept, but the process still waits for the payment: no step, the step timeout stays.
        try early.then(written: [.domain(.inventoryRecorded(reservationID: "r-1"))])
        #expect(early.process.currentStep == .paymentPending)
        #expect(early.process.lifecycle.pendingTimeout?.timeoutID == h.timeoutID(2))

        try await scenario.given(triggers: .orderPlaced, .inventoryReserved(reservationID: "r-1"))
            .when(.paymentConfirmed(paymentID: "p-1"))
            .then(written: [
                .domain(.paymentRecorded(paymentID: "p-1")),
                .domain(.stepCompleted(.paymentConfirmed)),
                .domain(.stepCompleted(.inventoryReserved)),
                h.cancelled(2),
                h.scheduled(8, dueAt: h.at(day)),
            ])
    }

    @Test("events in reverse order complete the process once the first one arrives")
    func reversed() async throws {
        let outcome = try await scenario
            .given(triggers: .delivered, .shipped(trackingNumber: "T-1"), .inventoryReserved(reservationID: "r-1"))
            .when(.paymentConfirmed(paymentID: "p-1"))
        try outcome.then(status: .completed)
        let steps = outcome.written.compactMap { event -> FulfillmentStep? in
            if case .domain(.stepCompleted(let step)) = event { return step }
            return nil
        }
        #expect(steps == [.paymentConfirmed, .inventoryReserved, .shipped, .delivered])
    }

    @Test("a late event after completion writes nothing", arguments: [
        ProcessTrigger.delivered, .paymentConfirmed(paymentID: "p-2"), .failed(reason: "late refund"), .orderPlaced,
    ])
    func lateAfterCompletion(_ trigger: ProcessTrigger) async throws {
        try await scenario
            .given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"), .inventoryReserved(reservationID: "r-1"), .shipped(trackingNumber: "T-1"), .delivered)
            .when(trigger, after: .seconds(30 * day))
            .thenNothingWritten()
            .then(status: .completed)
    }

    @Test("a late event after failure writes nothing")
    func lateAfterFailure() async throws {
        try await scenario.given(triggers: .orderPlaced, .failed(reason: "payment failed: card declined"))
            .when(.paymentConfirmed(paymentID: "p-1"))
            .thenNothingWritten()
            .then(status: .failed(reason: "payment failed: card declined"))
    }

    @Test("a failure at each step fails the process and cancels its timeout", arguments: 0...3)
    func failureAtEachStep(_ completedSteps: Int) async throws {
        let progress: [ProcessTrigger] = [.paymentConfirmed(paymentID: "p"), .inventoryReserved(reservationID: "r"), .shipped(trackingNumber: "T")]
        let h = history
        var given = scenario.given(triggers: .orderPlaced)
        for trigger in progress.prefix(completedSteps) { given = given.given(triggers: trigger) }
        let outcome = try await given.when(.failed(reason: "shipment failed: lost"), after: .seconds(hour))
        let pending = try #require(outcome.written.first.flatMap { event -> String? in
            if case .lifecycle(.timeoutCancelled(let cancelled)) = event { return cancelled.timeoutID }
            return nil
        })
        #expect(pending.hasPrefix(h.processID.rawValue + "@"))
        try outcome.then(written: [
            .lifecycle(.timeoutCancelled(TimeoutCancelled(timeoutID: pending, reason: "the process failed"))),
            h.failed("shipment failed: lost", at: h.at(hour)),
        ])
        #expect(outcome.process.currentStep == .failed(reason: "shipment failed: lost"))
        #expect(outcome.process.lifecycle.pendingTimeout == nil)
    }

    @Test("a trigger after the deadline fails the process instead of advancing it")
    func pastDeadline() async throws {
        let h = history
        try await scenario.given(triggers: .orderPlaced)
            .when(.paymentConfirmed(paymentID: "p-1"), after: .seconds(8 * day))
            .then(written: [h.cancelled(2, "the process failed"), h.failed("the process passed its deadline", at: h.at(8 * day))])
    }

    @Test("a step timeout schedules a retry with the next timeout")
    func timeoutRetries() async throws {
        let h = history
        let outcome = try await scenario.given(triggers: .orderPlaced).whenTimeoutFires(after: .seconds(day))
        try outcome.then(written: [
            h.retry(firing: 2, attempt: 1, retryAt: h.at(day + hour)),
            h.scheduled(4, dueAt: h.at(day + hour), attempt: 1),
        ])
        #expect(outcome.process.retryCount == 1)
        #expect(outcome.firing?.outcome == .retryScheduled(attempt: 1, next: ScheduledTimeout(processID: h.processID, timeoutID: h.timeoutID(4), dueAt: h.at(day + hour), attempt: 1)))
    }

    @Test("progress after retries resets the retry count")
    func progressResetsRetries() async throws {
        let outcome = try await scenario.given(triggers: .orderPlaced)
            .givenTime(advancedBy: .seconds(day)).givenPendingTimeoutFired()
            .givenTime(advancedBy: .seconds(hour)).givenPendingTimeoutFired()
            .when(.paymentConfirmed(paymentID: "p-1"))
        #expect(outcome.process.retryCount == 0)
        #expect(outcome.process.lifecycle.totalRetries == 2)
        #expect(outcome.process.lifecycle.pendingTimeout?.attempt == 0)
    }

    @Test("a timeout that arrives early writes nothing and says when it is due")
    func early() async throws {
        let h = history
        try await scenario.given(triggers: .orderPlaced)
            .whenTimeoutFires(after: .seconds(day - 1))
            .thenNotYetDue(until: h.at(day))
    }

    @Test("a timeout after completion does nothing")
    func timeoutAfterCompletion() async throws {
        let h = history
        let outcome = try await scenario
            .given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"), .inventoryReserved(reservationID: "r-1"), .shipped(trackingNumber: "T-1"), .delivered)
            .whenTimeoutArrives(h.timeoutID(14), after: .seconds(3 * day))
        try outcome.thenNothingWritten().then(status: .completed)
        #expect(outcome.firing?.outcome == .ignored(.processEnded))
    }

    @Test("a cancelled or superseded timeout does nothing")
    func staleTimeout() async throws {
        let h = history
        let outcome = try await scenario.given(triggers: .orderPlaced, .paymentConfirmed(paymentID: "p-1"))
            .whenTimeoutArrives(h.timeoutID(2), after: .seconds(2 * day))
        try outcome.thenNothingWritten().then(status: .running)
        #expect(outcome.firing?.outcome == .ignored(.cancelled))

        let unknown = try await scenario.given(triggers: .orderPlaced).whenTimeoutArrives("order-fulfillment-o-1@99", after: .seconds(2 * day))
        try unknown.thenNothingWritten()
        #expect(unknown.firing?.outcome == .ignored(.unknownTimeout))
    }

    @Test("max retries end in Failed")
    func maxRetries() async throws {
        let h = history
        // Default policy: 3 retries after 1 h, 2 h, 4 h.
        let outcome = try await scenario.given(triggers: .orderPlaced)
            .givenTime(advancedBy: .seconds(day)).givenPendingTimeoutFired()
            .givenTime(advancedBy: .seconds(hour)).givenPendingTimeoutFired()
            .givenTime(advancedBy: .seconds(2 * hour)).givenPendingTimeoutFired()
            .whenTimeoutFires(after: .seconds(4 * hour))
        try outcome.then(written: [h.failed("the process made no progress after 3 retries", at: h.at(day + 7 * hour))])
            .then(status: .failed(reason: "the process made no progress after 3 retries"))
        #expect(outcome.firing?.outcome == .failed(reason: "the process made no progress after 3 retries"))
    }

    @Test("exponential backoff grows and is capped at its maximum")
    func backoffCapped() async throws {
        let policy = ProcessTimeoutPolicy(
            stepTimeout: .seconds(day), overallTimeout: .seconds(30 * day),
            retryPolicy: RetryPolicy(maxRetries: 6, backoff: .exponential(initial: .seconds(hour), multiplier: 2, maximum: .seconds(3 * hour)), jitter: 0)
        )
        let start = clock.now
        var scenario = ProcessScenario(OrderFulfillmentProcess(timeoutPolicy: policy), businessID: "o-1", clock: clock)
            .given(triggers: .orderPlaced)
            .givenTime(advancedBy: .seconds(day))
        var delays: [Double] = []
        for _ in 0..<6 {
            // Every run replays the history from the start on a fresh store.
            clock.set(to: start)
            let outcome = try await scenario.whenTimeoutFires(after: .zero)
            guard case .retryScheduled(_, let next?)? = outcome.firing?.outcome else {
                Issue.record("expected a retry, got \(String(describing: outcome.firing?.outcome))")
                return
            }
            let delay = next.dueAt.timeIntervalSince(clock.now)
            delays.append(delay)
            scenario = scenario.givenPendingTimeoutFired().givenTime(advancedBy: .seconds(Int(delay)))
        }
        #expect(delays == [hour, 2 * hour, 3 * hour, 3 * hour, 3 * hour, 3 * hour])
    }

    @Test("retries never go past the deadline, and the timeout at the deadline fails the process")
    func retriesStopAtDeadline() async throws {
        let policy = ProcessTimeoutPolicy(
            stepTimeout: .seconds(day), overallTimeout: .seconds(day + 2 * hour),
            retryPolicy: RetryPolicy(maxRetries: 10, backoff: .fixed(.seconds(5 * hour)), jitter: 0)
        )
        let h = OrderHistory(orderID: "o-1", start: clock.now, process: OrderFulfillmentProcess(timeoutPolicy: policy))
        let base = ProcessScenario(OrderFulfillmentProcess(timeoutPolicy: policy), businessID: "o-1", clock: clock).given(triggers: .orderPlaced)
        try await base.whenTimeoutFires(after: .seconds(day))
            .then(written: [h.retry(firing: 2, attempt: 1, retryAt: h.at(day + 2 * hour)), h.scheduled(4, dueAt: h.at(day + 2 * hour), attempt: 1)])
        clock.set(to: h.start)
        try await base.givenTime(advancedBy: .seconds(day)).givenPendingTimeoutFired()
            .whenTimeoutFires(after: .seconds(2 * hour))
            .then(written: [h.failed("the process passed its deadline", at: h.at(day + 2 * hour))])
    }
}

@Suite("Retry policies of process timeouts")
struct RetryPolicyTests {
    func delays(_ policy: RetryPolicy, count: Int) -> [Double] {
        (0..<count).map { retries in
            ProcessTimeout(timeoutID: "t", timeoutAt: Date(timeIntervalSince1970: 0), retryPolicy: policy, currentRetries: retries)
                .nextRetryDelay.seconds
        }
    }

    @Test("fixed delay")
    func fixed() {
        #expect(delays(RetryPolicy(maxRetries: 3, backoff: .fixed(.seconds(30)), jitter: 0), count: 4) == [30, 30, 30, 30])
    }

    @Test("linear backoff grows by its increment up to its maximum")
    func linear() {
        let policy = RetryPolicy(maxRetries: 5, backoff: .linear(initial: .seconds(10), increment: .seconds(5), maximum: .seconds(22)), jitter: 0)
        #expect(delays(policy, count: 5) == [10, 15, 20, 22, 22])
    }

    @Test("exponential backoff doubles up to its maximum")
    func exponential() {
        let policy = RetryPolicy(maxRetries: 8, backoff: .exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(10)), jitter: 0)
        #expect(delays(policy, count: 6) == [1, 2, 4, 8, 10, 10])
    }

    @Test("max retries bounds should-retry")
    func maxRetries() {
        let policy = RetryPolicy(maxRetries: 2, backoff: .fixed(.seconds(1)), jitter: 0)
        let flags = (0..<4).map { ProcessTimeout(timeoutID: "t", timeoutAt: Date(), retryPolicy: policy, currentRetries: $0).shouldRetry }
        #expect(flags == [true, true, false, false])
    }

    @Test("jitter is drawn from the timeout id: the same id always gets the same delay, within the jitter band")
    func deterministicJitter() {
        let policy = RetryPolicy(maxRetries: 3, backoff: .fixed(.seconds(100)), jitter: 0.5)
        let delaysByID = (0..<50).map { ProcessTimeout(timeoutID: "p@\($0)", timeoutAt: Date(), retryPolicy: policy, currentRetries: 0).nextRetryDelay.seconds }
        let again = (0..<50).map { ProcessTimeout(timeoutID: "p@\($0)", timeoutAt: Date(), retryPolicy: policy, currentRetries: 0).nextRetryDelay.seconds }
        #expect(delaysByID == again)
        #expect(delaysByID.allSatisfy { $0 > 50 && $0 <= 100 })
        #expect(Set(delaysByID).count > 40)
    }

    @Test("a policy survives a round trip through JSON")
    func coding() throws {
        let policies = [
            RetryPolicy(maxRetries: 3, backoff: .fixed(.milliseconds(1500)), jitter: 0),
            RetryPolicy(maxRetries: 4, backoff: .linear(initial: .seconds(1), increment: .seconds(2), maximum: .seconds(60)), jitter: 0.25),
            RetryPolicy(maxRetries: 5, backoff: .exponential(initial: .seconds(3600), multiplier: 2, maximum: .seconds(8 * 3600)), jitter: 0),
        ]
        for policy in policies {
            let data = try JSONEncoder().encode(policy)
            #expect(try JSONDecoder().decode(RetryPolicy.self, from: data) == policy)
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(RetryPolicy.self, from: Data(#"{"maxRetries":1,"backoff":{"kind":"random"}}"#.utf8))
        }
    }
}

