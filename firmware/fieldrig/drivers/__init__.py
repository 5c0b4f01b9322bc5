"""Drivers for the parts on a fieldrig cell rig, one module per part.

Each driver follows its part's datasheet (register map, frame format, CRC where the part
has one; the section is cited in the module docstring) and receives its bus objects
(``machine.SPI`` / ``I2C`` / ``Pin`` / ``PWM`` / ``UART`` / ``WDT``, or test doubles) in
the constructor: no driver knows a pin number. ``boards/<board>.py`` does the wiring.

Constructors only put outputs into their safe state (chip selects idle, heater off,
stepper disabled); talking to a part (reset, configuration, calibration) happens in the
driver's ``init()`` so the application decides when and can report a missing part.

- ``ads131m04`` — TI ADS131M04 4-channel 24-bit ADC: cell voltage, cell current (shunt),
  reference electrode; DRDY-paced block reads with CRC checking.
- ``dac8551`` — TI DAC8551 16-bit DAC: the galvanostat set-point.
- ``max31865`` — Maxim MAX31865 RTD-to-digital converter: cell temperature.
- ``nau7802`` — Nuvoton NAU7802 24-bit bridge ADC: load cell force and stack pressure.
- ``tmc2209`` — stepper on the screw press (STEP/DIR/EN, end stops, UART registers).
- ``heater`` — cartridge heater MOSFET on a PWM output.
- ``watchdog`` — the hardware watchdog (``machine.WDT``).
"""
